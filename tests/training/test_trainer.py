"""Tests for sdl_tf.training.trainer: schedule, a full run's outputs, TensorBoard, finish/continue,
and resume after a real SIGKILL."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from sdl_tf.config import DataConfig, ModelConfig, TrainConfig
from sdl_tf.modeling.model import load_model_dir
from sdl_tf.training import trainer as trainer_lib
from tests.helpers.demo_data import demo_dataset
from tests.helpers.paths import REPO_ROOT
from tests.helpers.tensorboard import tensorboard_scalars


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return demo_dataset(tmp_path_factory)


def _config(demo_dir, model_dir, **kw):
    base = dict(
        model_dir=str(model_dir),
        data=DataConfig(data_dir=demo_dir, shuffle_buffer=64, cutout=0.25),
        model=ModelConfig(backbone="tiny", weights="none", image_size=32, num_rows=2, dim=16),
        epochs=2, batch_size=16, learning_rate=1e-3, checkpoint_every_steps=4,
        log_every_steps=2, eval_batch_size=32,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_one_cycle_schedule_by_hand():
    s = trainer_lib.OneCycleCosine(1e-3, total_steps=100, warmup_fraction=0.2, div_factor=25,
                                final_div_factor=1e4)
    # PyTorch OneCycleLR(cos): up from 1e-3/25 = 4e-5 over steps 0..19, down to 4e-5/1e4 at 99.
    lr = lambda step: float(s(step))  # noqa: E731
    np.testing.assert_allclose(lr(0), 4e-5, rtol=1e-5)
    np.testing.assert_allclose(lr(9.5), (4e-5 + 1e-3) / 2, rtol=1e-5)  # cos(pi/2) = 0
    np.testing.assert_allclose(lr(19), 1e-3, rtol=1e-5)
    np.testing.assert_allclose(lr(59), (1e-3 + 4e-9) / 2, rtol=1e-5)  # halfway down
    np.testing.assert_allclose(lr(99), 4e-9, rtol=1e-4)
    assert lr(30) > lr(40) > lr(50)
    assert trainer_lib.OneCycleCosine(**s.get_config()).get_config() == s.get_config()


def test_train_outputs_tensorboard_and_rerun(demo_dir, tmp_path, capsys):
    model_dir = tmp_path / "run"
    cfg = _config(demo_dir, model_dir)
    result = trainer_lib.train(cfg, progress=True)
    # 96 train images // 16 = 6 steps per epoch, 2 epochs.
    assert result["status"] == "finished" and result["step"] == 12
    assert result["steps_per_epoch"] == 6 and result["resumed_from_step"] == 0
    assert np.isfinite(result["last_loss"])
    for name in ("flags.txt", "config.json", "labels.json", "label_vectors.npy", "final.keras",
                 "train_result.json"):
        assert (model_dir / name).is_file(), name
    assert "--backbone=tiny" in (model_dir / "flags.txt").read_text()
    assert json.loads((model_dir / "config.json").read_text())["model"]["dim"] == 16
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith("ckpt-12")
    assert "Epoch 2/2" in capsys.readouterr().out  # console progress bar

    acc, train = tensorboard_scalars(str(model_dir / "logs" / "train"))
    for tag in ("loss/total", "loss/rank", "loss/reg", "loss/sdw_mean", "learning_rate",
                "images_per_sec"):
        assert sorted(train[tag]) == [2, 4, 6, 8, 10, 12], tag
    assert all(np.isfinite(v) for v in train["loss/total"].values())
    assert all(v >= 1.0 for v in train["loss/sdw_mean"].values())  # eq. (3): 1 + variance
    for step, value in train["learning_rate"].items():
        np.testing.assert_allclose(value, float(trainer_lib.OneCycleCosine(1e-3, 12)(step)),
                                   rtol=1e-5)
    assert "flags" in acc.Tags()["tensors"]  # the resolved flags as a text summary
    _, val = tensorboard_scalars(str(model_dir / "logs" / "val"))
    for tag in ("zsl/mAP", "gzsl/mAP", "zsl/F1@3", "gzsl/F1@5"):
        assert sorted(val[tag]) == [6, 12], tag  # once per epoch on the val split
        assert all(0 <= v <= 100 for v in val[tag].values())
    assert result["val"]["zsl/mAP"] == pytest.approx(val["zsl/mAP"][12])

    model, space = load_model_dir(str(model_dir))
    assert tuple(model.output.shape) == (None, 2, 16) and space.dim == 16

    # A finished run is not silently retrained.
    mtime = os.path.getmtime(model_dir / "final.keras")
    again = trainer_lib.train(cfg)
    assert again["status"] == "already_finished" and again["step"] == 12
    assert os.path.getmtime(model_dir / "final.keras") == mtime
    assert "already trained" in capsys.readouterr().err

    # More epochs continue from the last checkpoint (step 12), not from scratch.
    more = trainer_lib.train(cfg.replace(epochs=3), progress=False)
    assert (more["status"], more["resumed_from_step"], more["step"]) == ("finished", 12, 18)

    # A different model in the same dir is refused unless --overwrite.
    other = cfg.replace(model=ModelConfig(backbone="tiny", weights="none", image_size=32,
                                          num_rows=3, dim=16), epochs=1)
    with pytest.raises(ValueError, match="different settings.*model.*--overwrite"):
        trainer_lib.train(other)
    fresh = trainer_lib.train(other.replace(overwrite=True), progress=False)
    assert (fresh["resumed_from_step"], fresh["step"]) == (0, 6)


def _train_cmd(demo_dir, model_dir):
    return [sys.executable, "-m", "sdl_tf.train", f"--data_dir={demo_dir}",
            f"--model_dir={model_dir}", "--backbone=tiny", "--weights=none", "--image_size=32",
            "--num_rows=2", "--epochs=2", "--steps_per_epoch=20", "--batch_size=16",
            "--learning_rate=1e-3", "--checkpoint_every_steps=5", "--log_every_steps=1",
            "--shuffle_buffer=64", "--cutout=0.25", "--val_split=none", "--noprogress"]


def test_resume_after_sigkill_matches_uninterrupted_run(demo_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": ""}
    killed_dir = tmp_path / "killed"
    cmd = _train_cmd(demo_dir, killed_dir)
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt_dir = killed_dir / "checkpoints"
    deadline = time.time() + 120
    try:
        # Kill as soon as the first step checkpoint (step 5 of 40) is complete: mid-epoch 1.
        while time.time() < deadline and proc.poll() is None:
            if (ckpt_dir / "checkpoint").is_file():
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = int(tf.train.latest_checkpoint(str(ckpt_dir)).rsplit("-", 1)[1])
    assert 0 < killed_at < 40 and killed_at % 20 and not (killed_dir / "final.keras").exists()

    # Rerunning the same command resumes (same optimizer state, step and schedule).
    rerun = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming from {ckpt_dir}/ckpt-{killed_at}: step {killed_at}" in rerun.stderr
    result = json.loads((killed_dir / "train_result.json").read_text())
    assert (result["resumed_from_step"], result["step"]) == (killed_at, 40)

    # The same run without the interruption, in this process.
    ref_dir = tmp_path / "ref"
    ref = trainer_lib.train(_config(demo_dir, ref_dir, epochs=2, steps_per_epoch=20,
                                 checkpoint_every_steps=5, log_every_steps=1,
                                 data=DataConfig(data_dir=demo_dir, shuffle_buffer=64,
                                                 cutout=0.25, val_split="none")),
                         progress=False)
    assert ref["step"] == 40
    resumed_model, _ = load_model_dir(str(killed_dir))
    ref_model, _ = load_model_dir(str(ref_dir))
    # Same data order, augmentation, optimizer moments and LR after resume: same weights, up to
    # float reassociation in multi-threaded CPU kernels.
    for a, b in zip(resumed_model.weights, ref_model.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    _, logged = tensorboard_scalars(str(killed_dir / "logs" / "train"))
    _, ref_logged = tensorboard_scalars(str(ref_dir / "logs" / "train"))
    for step in range(killed_at + 1, 41):
        np.testing.assert_allclose(logged["learning_rate"][step],
                                   ref_logged["learning_rate"][step], rtol=1e-6)
        np.testing.assert_allclose(logged["loss/total"][step], ref_logged["loss/total"][step],
                                   rtol=1e-3)


def _fixed_batch(num_seen, batch=8, size=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    targets = (rng.random((batch, num_seen)) < 0.3).astype(np.float32)
    targets[:, 0] = 1.0
    return tf.constant(images), tf.constant(targets)


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
        trainer = trainer_lib.Trainer(cfg, vectors, tf.distribute.get_strategy(), total_steps=10)
        losses[jit] = [float(trainer.train_step(batch)["loss"]) for _ in range(2)]
    # XLA fuses and reorders float32 ops; Adam's normalised steps keep differences tiny.
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-3)


def test_cached_training_images_train_the_same_model(demo_dir, tmp_path, capsys):
    def run(name, cache):
        data = DataConfig(data_dir=demo_dir, shuffle_buffer=32, val_split="none",
                          val_fraction=0.2, augment_mode="flip", cache_train_images=cache)
        cfg = _config(demo_dir, tmp_path / name, data=data, epochs=2, steps_per_epoch=4)
        result = trainer_lib.train(cfg, progress=False)
        model, _ = load_model_dir(str(tmp_path / name))
        return result, model.get_weights()

    plain, plain_weights = run("plain", False)
    assert "decoded" not in capsys.readouterr().err
    cached, cached_weights = run("cached", True)
    decoded = re.search(r"decoded (\d+) training images once", capsys.readouterr().err)
    assert decoded and 56 <= int(decoded.group(1)) < 96  # the rest of the 96 is validation
    assert cached["last_loss"] == plain["last_loss"]
    np.testing.assert_equal(cached["val"], plain["val"])  # NaN ZSL (no unseen) equal too
    for a, b in zip(plain_weights, cached_weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_mixed_precision_run(demo_dir, tmp_path):
    import keras

    cfg = _config(demo_dir, tmp_path / "mp", mixed_precision=True, epochs=1, steps_per_epoch=2,
                  log_every_steps=1,
                  data=DataConfig(data_dir=demo_dir, shuffle_buffer=16, val_split="none"))
    result = trainer_lib.train(cfg, progress=False)
    assert result["step"] == 2 and np.isfinite(result["last_loss"])
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    model, _ = load_model_dir(str(tmp_path / "mp"))
    assert model.get_layer("tiny").get_layer("conv0").compute_dtype == "float16"
    assert model.output.dtype == "float32"


def test_validation_logs_row_usage_figure3_grid_and_per_label_ap(demo_dir, tmp_path):
    from sdl_tf.labels.label_space import LabelSpace

    model_dir = tmp_path / "diag"
    cfg = _config(demo_dir, model_dir, epochs=1, steps_per_epoch=2, log_every_steps=1,
                  model=ModelConfig(backbone="tiny", weights="none", image_size=32, num_rows=3,
                                    dim=16))
    result = trainer_lib.train(cfg, progress=False)
    logdir = str(model_dir / "logs" / "val")
    acc, val = tensorboard_scalars(logdir)
    shares = [val[f"rows/share_{m}"][2] for m in (1, 2, 3)]  # M = 3 rows, step 2
    assert "rows/share_4" not in val
    assert sum(shares) == pytest.approx(1.0, abs=1e-5) and all(0 <= x <= 1 for x in shares)
    assert 0.0 <= val["rows/entropy"][2] <= np.log(3) + 1e-6
    assert 0.0 <= val["rows/mean_image_entropy"][2] <= val["rows/entropy"][2] + 1e-6
    assert -1.0 <= val["rows/mean_cosine"][2] <= 1.0
    assert result["val"]["rows/entropy"] == pytest.approx(val["rows/entropy"][2])

    # The raw event files hold the Figure-3 grid (a PNG), the AP histograms and the AP table.
    events = {}
    for name in os.listdir(logdir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
            for value in event.summary.value:
                events[value.tag] = value
    grid = events["figure3_grid"]
    assert grid.metadata.plugin_data.plugin_name == "images"
    width, height, png = tf.make_ndarray(grid.tensor)  # image summaries: [w, h, png...]
    image = tf.io.decode_png(png).numpy()
    assert image.shape == (int(height), int(width), 3)
    assert image.shape[1] >= 4 * 128  # 8 validation images, 4 per grid row
    assert image.std() > 0
    for tag in ("per_label_ap/gzsl", "per_label_ap/zsl_unseen"):
        assert events[tag].metadata.plugin_data.plugin_name == "histograms"
    table = tf.make_ndarray(events["per_label_ap"].tensor).item().decode()
    space = LabelSpace.load(demo_dir)
    assert table.count("| unseen |") == int(space.unseen.sum())
    assert table.count("| seen |") == space.num_labels - int(space.unseen.sum())


def test_figure3_grid_of_a_few_validation_images(demo_dir):
    from sdl_tf.labels.label_space import LabelSpace
    from sdl_tf.modeling.model import build_model

    space = LabelSpace.load(demo_dir)
    cfg = _config(demo_dir, "unused", model=ModelConfig(backbone="tiny", weights="none",
                                                        image_size=32, num_rows=2, dim=16))
    images, labels, ids = trainer_lib.figure3_images(cfg, ("split", "val"), space.num_labels, 3)
    assert images.shape == (3, 32, 32, 3) and labels.shape == (3, space.num_labels)
    assert len(ids) == 3
    model = build_model(cfg.model)
    grid = trainer_lib.figure3_grid(model, images, ids, space, top_k=4, thumb=64)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[1] == 3 * (64 + 12)


def _one_step(tmp_path, **kw):
    """Weights before and after one train step of a fresh, seeded Trainer (no dropout)."""
    cfg = TrainConfig(model_dir=str(tmp_path), batch_size=8, learning_rate=1e-2,
                      model=ModelConfig(backbone="tiny", weights="none", image_size=32,
                                        num_rows=2, dim=16, dropout=0.0), **kw)
    trainer = trainer_lib.Trainer(cfg, np.eye(6, 16, dtype=np.float32),
                               tf.distribute.get_strategy(), total_steps=10)
    before = {v.path: v.numpy().copy() for v in trainer.model.trainable_variables}
    lr = trainer.learning_rate()
    trainer.train_step(_fixed_batch(6))
    return before, {v.path: v.numpy() for v in trainer.model.trainable_variables}, lr


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
