"""Distributed training: MirroredStrategy on 2 logical CPUs (conftest) and
MultiWorkerMirroredStrategy with 2 local worker processes, each against the one-device run on
the same global batches."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from sdl_tf.config import DataConfig, ModelConfig, TrainConfig
from sdl_tf.modeling.model import load_model_dir
from sdl_tf.training import trainer as trainer_lib
from tests.helpers import mw_worker
from tests.helpers.demo_data import demo_dataset
from tests.helpers.paths import REPO_ROOT


def _losses(model_dir):
    acc = event_accumulator.EventAccumulator(os.path.join(model_dir, "logs", "train"),
                                             size_guidance={"tensors": 0})
    acc.Reload()
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors("loss/total")}


def test_mirrored_equals_single_device(tmp_path_factory, tmp_path):
    assert len(tf.config.list_logical_devices("CPU")) == 2  # tests/conftest.py
    demo_dir = demo_dataset(tmp_path_factory)
    results = {}
    for strategy in ("default", "mirrored"):
        cfg = TrainConfig(
            model_dir=str(tmp_path / strategy), strategy=strategy,
            data=DataConfig(data_dir=demo_dir, shuffle_buffer=64, cutout=0.25,
                            val_split="none"),
            # dropout 0: per-replica dropout masks cannot match the one-device run; the tiny
            # backbone uses GroupNorm, whose statistics are per example.
            model=ModelConfig(backbone="tiny", weights="none", image_size=32, num_rows=2,
                              dim=16, dropout=0.0),
            epochs=1, steps_per_epoch=4, batch_size=16, learning_rate=1e-3, log_every_steps=1,
        )
        results[strategy] = trainer_lib.train(cfg, progress=False)
    assert results["mirrored"]["step"] == 4
    single, mirrored = _losses(str(tmp_path / "default")), _losses(str(tmp_path / "mirrored"))
    assert sorted(single) == sorted(mirrored) == [1, 2, 3, 4]
    # Same global batches (each replica gets 8 of the 16), loss = sum / global batch on each
    # replica, gradients summed: the same numbers up to float summation order.
    for step in single:
        np.testing.assert_allclose(mirrored[step], single[step], rtol=1e-5)
    m_single, _ = load_model_dir(str(tmp_path / "default"))
    m_mirrored, _ = load_model_dir(str(tmp_path / "mirrored"))
    for a, b in zip(m_single.weights, m_mirrored.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multi_worker_two_processes_match_single_device(tmp_path):
    ports = ",".join(str(p) for p in _free_ports(2))
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    outs = [str(tmp_path / f"worker{i}.npz") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "tests.helpers.mw_worker", str(i), ports,
                               outs[i]], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=180)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    w0, w1 = (np.load(o, allow_pickle=False) for o in outs)
    assert bool(w0["is_chief"]) and not bool(w1["is_chief"])
    weights = sorted(k for k in w0.files if k.startswith("w"))
    # Both workers end with identical weights (all-reduced updates).
    for k in weights:
        np.testing.assert_array_equal(w0[k], w1[k])
    np.testing.assert_array_equal(w0["losses"], w1["losses"])

    # One device, same initial weights, the whole global batch per step.
    images, targets, vectors = mw_worker.global_batches()
    trainer = trainer_lib.Trainer(mw_worker.config(), vectors, tf.distribute.get_strategy(),
                               total_steps=10)
    trainer.model.set_weights([w0[f"init{i}"] for i in range(len(weights))])
    ref_losses = [float(trainer.train_step((tf.constant(x), tf.constant(y)))["loss"])
                  for x, y in zip(images, targets, strict=True)]
    np.testing.assert_allclose(w0["losses"], ref_losses, rtol=1e-5)
    for i, w in enumerate(trainer.model.weights):
        np.testing.assert_allclose(w0[f"w{i}"], w.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["multi_worker"])
def test_multi_worker_needs_tf_config(monkeypatch, name):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        trainer_lib.get_strategy(name)
