"""Tests for sdl_tf.training.task: the one-cycle schedule, the live SDL loss of the step, weight
decay (decoupled and L2) and the XLA-compiled step."""

import numpy as np
import pytest
import tensorflow as tf

from sdl_tf.config import ModelConfig, TrainConfig
from sdl_tf.modeling.losses import SDLLoss
from sdl_tf.training import task as task_lib
from tests.helpers.train_configs import tiny_model


def test_one_cycle_schedule_by_hand():
    s = task_lib.OneCycleCosine(1e-3, total_steps=100, warmup_fraction=0.2, div_factor=25,
                                final_div_factor=1e4)
    # PyTorch OneCycleLR(cos): up from 1e-3/25 = 4e-5 over steps 0..19, down to 4e-5/1e4 at 99.
    lr = lambda step: float(s(step))  # noqa: E731
    np.testing.assert_allclose(lr(0), 4e-5, rtol=1e-5)
    np.testing.assert_allclose(lr(9.5), (4e-5 + 1e-3) / 2, rtol=1e-5)  # cos(pi/2) = 0
    np.testing.assert_allclose(lr(19), 1e-3, rtol=1e-5)
    np.testing.assert_allclose(lr(59), (1e-3 + 4e-9) / 2, rtol=1e-5)  # halfway down
    np.testing.assert_allclose(lr(99), 4e-9, rtol=1e-4)
    assert lr(30) > lr(40) > lr(50)
    assert task_lib.OneCycleCosine(**s.get_config()).get_config() == s.get_config()


def test_schedule_keeps_its_registered_name():
    # Saved optimizers name the schedule "sdl_tf>OneCycleCosine"; it must not change.
    import keras

    assert (keras.saving.get_registered_name(task_lib.OneCycleCosine)
            == "sdl_tf>OneCycleCosine")


def _fixed_batch(num_seen, batch=8, size=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    targets = (rng.random((batch, num_seen)) < 0.3).astype(np.float32)
    targets[:, 0] = 1.0
    return tf.constant(images), tf.constant(targets)


def test_step_differentiates_and_logs_its_sdl_loss(tmp_path):
    cfg = TrainConfig(model_dir=str(tmp_path), batch_size=8, learning_rate=1e-3, reg_lambda=0.2,
                      use_sdw=True, loss_mode="official", model=tiny_model(dropout=0.0))
    vectors = np.eye(6, 16, dtype=np.float32)
    task = task_lib.SDLTask(cfg, vectors, tf.distribute.get_strategy(), total_steps=10)
    assert isinstance(task.loss, SDLLoss)
    assert (task.loss.reg_lambda, task.loss.mode, task.loss.scoring) == (0.2, "official", "max")
    np.testing.assert_array_equal(task.loss.label_vectors, vectors)
    images, targets = _fixed_batch(6)
    # The terms of the loss object on the weights before the step (dropout 0, GroupNorm: the
    # training-mode forward pass is the inference one).
    want = task.loss.terms(targets, task.model(images, training=False))
    got = task.train_step((images, targets))
    assert sorted(got) == ["loss", "rank", "reg", "sdw"]
    for name in got:  # sums / global batch = the batch means of the per-image terms
        np.testing.assert_allclose(float(got[name]), float(np.mean(want[name])), rtol=1e-5)
    assert task.step == 1


@pytest.mark.slow  # XLA compilation alone takes ~15 s on 2 cores
def test_jit_compile_step_matches_eager_graph(tmp_path):
    vectors = np.eye(6, 16, dtype=np.float32)
    batch = _fixed_batch(6)
    losses = {}
    for jit in (False, True):
        cfg = TrainConfig(model_dir=str(tmp_path), batch_size=8, learning_rate=1e-3,
                          jit_compile=jit, model=ModelConfig(backbone="tiny", weights="none",
                                                             image_size=32, num_rows=2, dim=16,
                                                             dropout=0.0))
        task = task_lib.SDLTask(cfg, vectors, tf.distribute.get_strategy(), total_steps=10)
        losses[jit] = [float(task.train_step(batch)["loss"]) for _ in range(2)]
    # XLA fuses and reorders float32 ops; Adam's normalised steps keep differences tiny.
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-3)


def _one_step(tmp_path, **kw):
    """Weights before and after one train step of a fresh, seeded task (no dropout)."""
    cfg = TrainConfig(model_dir=str(tmp_path), batch_size=8, learning_rate=1e-2,
                      model=ModelConfig(backbone="tiny", weights="none", image_size=32,
                                        num_rows=2, dim=16, dropout=0.0), **kw)
    task = task_lib.SDLTask(cfg, np.eye(6, 16, dtype=np.float32),
                            tf.distribute.get_strategy(), total_steps=10)
    before = {v.path: v.numpy().copy() for v in task.model.trainable_variables}
    lr = task.learning_rate()
    task.train_step(_fixed_batch(6))
    return before, {v.path: v.numpy() for v in task.model.trainable_variables}, lr


def test_decoupled_weight_decay_excludes_bias_and_norm_variables(tmp_path):
    wd = 0.5
    v0, all_decayed, lr = _one_step(tmp_path, weight_decay=wd)
    _, excluded, _ = _one_step(tmp_path, weight_decay=wd, exclude_bias_norm_from_decay=True)
    one_d = [p for p in v0 if v0[p].ndim == 1]
    assert {p.split("/")[1] for p in one_d} == {"gamma", "beta"}  # the GroupNorm parameters
    for path, value in v0.items():
        if value.ndim == 1:
            # AdamW: w <- w - lr * wd * w - adam_step; the same adam_step in both runs.
            np.testing.assert_allclose(excluded[path] - all_decayed[path], lr * wd * value,
                                       rtol=1e-3, atol=1e-7)
        else:
            np.testing.assert_array_equal(excluded[path], all_decayed[path])
    gamma = next(p for p in one_d if p.endswith("gamma"))
    assert not np.array_equal(excluded[gamma], all_decayed[gamma])


def test_l2_weight_decay_is_a_gradient_term_skipping_bias_and_norm(tmp_path):
    wd = 1e3  # the L2 gradient wd * w dwarfs the loss gradient
    v0, plain, lr = _one_step(tmp_path, weight_decay=0.0, weight_decay_mode="l2")
    _, l2, _ = _one_step(tmp_path, weight_decay=wd, weight_decay_mode="l2",
                         exclude_bias_norm_from_decay=True)
    _, l2_all, _ = _one_step(tmp_path, weight_decay=wd, weight_decay_mode="l2")
    for path, value in v0.items():
        if value.ndim == 1:
            # Excluded: the same gradient, so Adam takes the same step as without decay.
            np.testing.assert_array_equal(l2[path], plain[path])
        else:
            # Adam's first step is ~lr * sign(gradient) = -lr * sign(w): coupled L2, not the
            # decoupled lr * wd * w (which would be 10 * w here).
            big = np.abs(value) > 1e-3
            np.testing.assert_allclose((l2[path] - value)[big], -lr * np.sign(value[big]),
                                       rtol=1e-2)
    gamma = next(p for p in v0 if p.endswith("gamma"))
    np.testing.assert_allclose(l2_all[gamma] - v0[gamma], -lr, rtol=1e-2)  # gamma = 1 decays
