"""Every project artefact goes through tf.io.gfile: the whole pipeline on TF's `ram://` filesystem.

Data prep (demo set) -> training -> evaluation -> export -> loading the export, -> prediction
and retrieval outputs, all with `ram://` paths, standing in for `gs://` (same code path: any
non-local path goes through `tf.io.gfile`). Nothing may appear on local disk under those names.
"""

import json
import os
import uuid

import numpy as np
import pytest
import tensorflow as tf

from data_prep import demo
from sdl_tf.config import DataConfig, EvalConfig, ExportConfig, ModelConfig, TrainConfig
from sdl_tf.evaluation import evaluator
from sdl_tf.labels.label_space import LabelSpace
from sdl_tf.serving import export_lib, retrieval, tagger
from sdl_tf.training import loop
from sdl_tf.utils import atomic_io

gfile = tf.io.gfile


@pytest.fixture
def ram_root():
    root = f"ram://sdl_e2e_{uuid.uuid4().hex[:8]}"
    yield root
    try:
        gfile.rmtree(root)
    except tf.errors.OpError:
        pass  # ram:// rmtree trips over its own listing ("assets.extra" under "assets")


def _tree(root):
    return sorted(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                  for d, _, files in gfile.walk(root) for f in files)


def test_atomic_writes_label_space_and_index_on_ram(ram_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = f"{ram_root}/a/b.txt"
    gfile.makedirs(f"{ram_root}/a")
    atomic_io.atomic_write_text(path, "a longer first version\n")
    atomic_io.atomic_write_text(path, "second\n")  # replaced, not appended to
    with gfile.GFile(path) as f:
        assert f.read() == "second\n"

    def fail(f):
        f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_io.atomic_write(path, fail, mode="w")
    assert gfile.listdir(f"{ram_root}/a") == ["b.txt"]  # old file kept, no temporary left

    space = LabelSpace(("cat", "dog", "zebra"), np.array([False, False, True]),
                       np.eye(3, 4, dtype=np.float32), "test")
    space.save(f"{ram_root}/space")
    loaded = LabelSpace.load(f"{ram_root}/space")
    assert loaded.names == space.names and np.array_equal(loaded.vectors, space.vectors)

    index = retrieval.RetrievalIndex(
        image_ids=np.array(["x", "y"]), matrices=np.ones((2, 2, 4), np.float32),
        label_names=np.array(space.names), label_unseen=space.unseen, label_vectors=space.vectors)
    index.save(f"{ram_root}/idx/index.npz")
    again = retrieval.RetrievalIndex.load(f"{ram_root}/idx/index.npz")
    assert list(again.image_ids) == ["x", "y"] and again.matrices.shape == (2, 2, 4)
    assert os.listdir(tmp_path) == []


def test_prepare_train_evaluate_export_on_ram(ram_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a path mishandled as local would land here (e.g. "ram:/...")
    data_dir, model_dir = f"{ram_root}/data", f"{ram_root}/run"
    export_dir, out_dir = f"{ram_root}/saved_models", f"{ram_root}/predictions"

    demo.prepare(demo.DemoConfig(output_dir=data_dir, num_train=32, num_val=8, num_test=8,
                                 image_size=32, vector_dim=16, num_samples=2, train_shards=2,
                                 eval_shards=1, num_workers=1, progress=False))
    files = _tree(data_dir)
    for name in ("labels.json", "label_vectors.npy", "attribute_vectors.txt",
                 "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
                 "test-00000-of-00001.tfrecord", "train-summary.json", "test-summary.json",
                 "samples/ground_truth.json"):
        assert name in files, name
    assert not any(".tmp-" in f for f in files), files
    space = LabelSpace.load(data_dir)

    cfg = TrainConfig(model_dir=model_dir, data=DataConfig(data_dir=data_dir, shuffle_buffer=16),
                      model=ModelConfig(backbone="tiny", weights="none", image_size=32,
                                        num_rows=2, dim=space.dim),
                      epochs=1, batch_size=8, steps_per_epoch=2, learning_rate=1e-3,
                      checkpoint_every_steps=1, log_every_steps=1, eval_batch_size=8)
    result = loop.train(cfg, progress=False)
    assert result["status"] == "finished" and result["step"] == 2
    run_files = _tree(model_dir)
    for name in ("config.json", "flags.txt", "labels.json", "label_vectors.npy", "final.keras",
                 "train_result.json", "checkpoints/checkpoint"):
        assert name in run_files, name
    assert any(f.startswith("logs/train/events.out.tfevents") for f in run_files)
    assert any(f.startswith("logs/val/events.out.tfevents") for f in run_files)
    # A rerun recognises the finished run from the ram:// checkpoint and final model.
    assert loop.train(cfg, progress=False)["status"] == "already_finished"

    summary = evaluator.evaluate(EvalConfig(model_dir=model_dir, batch_size=8), progress=False)
    eval_files = _tree(f"{model_dir}/eval")
    assert eval_files == ["test_metrics.json", "test_metrics.md", "test_per_label_ap.csv"]
    with gfile.GFile(f"{model_dir}/eval/test_metrics.json") as f:
        assert json.load(f)["gzsl"]["mAP"] == pytest.approx(summary["gzsl"]["mAP"])

    version_dir = export_lib.export_from_config(
        ExportConfig(model_dir=model_dir, export_dir=export_dir))
    assert version_dir == f"{export_dir}/sdl/1"
    assert export_lib.next_version(f"{export_dir}/sdl") == 2
    export_files = _tree(f"{export_dir}/sdl")
    for name in ("1/saved_model.pb", "1/assets.extra/labels.json",
                 "1/assets.extra/label_vectors.npy", "1/assets.extra/export_info.json"):
        assert name in export_files, name
    assert not any(".tmp-" in f for f in export_files), export_files

    loaded = export_lib.load_export(f"{export_dir}/sdl")
    assert loaded.path == version_dir and loaded.label_space.names == space.names
    sample = f"{data_dir}/samples/" + sorted(
        n for n in gfile.listdir(f"{data_dir}/samples") if n.endswith(".jpg"))[0]
    with gfile.GFile(sample, "rb") as f:
        image = f.read()
    out = loaded.signature("serving_default")(image_bytes=tf.constant([image]))
    assert out["scores"].shape == (1, space.num_labels)
    assert np.all(np.isfinite(out["scores"].numpy()))

    # Prediction and retrieval: images listed and read from ram://, outputs written there.
    results = tagger.run_predict(tagger.PredictConfig(
        model=f"{export_dir}/sdl", images=f"{data_dir}/samples", top_k=3, output_dir=out_dir),
        out=open(os.devnull, "w"))
    assert len(results) == 2 and all(not r.error for r in results)
    assert _tree(out_dir) == ["grid.png", "tags.html", "tags.json"]

    # Nothing of it on local disk: not under the working directory, nor as a literal "ram:" dir.
    assert os.listdir(tmp_path) == []
    assert not os.path.exists("ram:") and not os.path.exists(ram_root)
