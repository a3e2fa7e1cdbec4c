"""Tests for sdl_tf.evaluation.evaluator / sdl_tf.evaluate: streaming results equal the one-shot
metrics, the diverse subset (Table 4), the random baseline, output files, what is taken from the
run's config, stored backbone features and the CLI."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sdl_tf import errors
from sdl_tf.config import DataConfig, EvalConfig, ModelConfig, TrainConfig
from sdl_tf.evaluation import evaluator
from sdl_tf.evaluation.metrics import evaluate_scores
from sdl_tf.labels.label_space import LabelSpace
from sdl_tf.modeling import run_dir
from sdl_tf.modeling.model import build_model
from tests.helpers.demo_data import demo_dataset
from tests.helpers.paths import REPO_ROOT


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return demo_dataset(tmp_path_factory)


@pytest.fixture(scope="module")
def model_dir(demo_dir, tmp_path_factory):
    """A model directory as training writes it (untrained weights are enough here)."""
    out = tmp_path_factory.mktemp("run")
    space = LabelSpace.load(demo_dir)
    cfg = TrainConfig(model_dir=str(out), data=DataConfig(data_dir=demo_dir),
                      model=ModelConfig(backbone="tiny", weights="none", image_size=32,
                                        num_rows=2, dim=space.dim), eval_ks=(3, 5))
    build_model(cfg.model).save(run_dir.path(str(out), run_dir.FINAL_MODEL_FILE))
    space.save(str(out))
    run_dir.write_config(str(out), cfg)
    return str(out)


def _all_test_scores(model_dir, demo_dir):
    from sdl_tf.data import pipeline as data_lib
    from sdl_tf.modeling.scoring import numpy_scores

    model, space = run_dir.load(model_dir)
    ds = data_lib.eval_dataset(DataConfig(data_dir=demo_dir), "test", image_size=32,
                               num_labels=space.num_labels, batch_size=32)
    images, labels = next(iter(ds))
    return numpy_scores(model.predict(images, verbose=0), space.vectors), labels.numpy(), space


def test_evaluate_model_dir_matches_one_shot_metrics(model_dir, demo_dir):
    summary = evaluator.evaluate(EvalConfig(model_dir=model_dir, batch_size=7), progress=False)
    scores, labels, space = _all_test_scores(model_dir, demo_dir)
    expected = evaluate_scores(scores, labels, space.unseen_indices, ks=(3, 5))
    for task in ("zsl", "gzsl"):
        for key in ("mAP", "P@3", "R@3", "F1@3", "P@5", "R@5", "F1@5", "num_images"):
            assert summary[task][key] == pytest.approx(expected[task][key], rel=1e-5), key
    assert summary["split"] == "test" and summary["ks"] == [3, 5]
    assert summary["method"].startswith("SDL (M=2)")

    eval_dir = os.path.join(model_dir, "eval")
    assert sorted(os.listdir(eval_dir)) == ["test_metrics.json", "test_metrics.md",
                                            "test_per_label_ap.csv"]
    with open(os.path.join(eval_dir, "test_metrics.json")) as f:
        assert json.load(f)["zsl"]["mAP"] == pytest.approx(summary["zsl"]["mAP"])
    md = open(os.path.join(eval_dir, "test_metrics.md")).read()
    assert "| P@3 | R@3 | F1@3 | P@5 | R@5 | F1@5 | mAP |" in md.replace("  ", " ")
    assert "| ZSL |" in md and "| GZSL |" in md and "Table 4" in md
    with open(os.path.join(eval_dir, "test_per_label_ap.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == list(space.names)
    for i, r in enumerate(rows):
        gzsl = expected["gzsl"]["per_label_ap"][i]
        if np.isnan(gzsl):
            assert r["gzsl_ap"] == ""
        else:
            assert float(r["gzsl_ap"]) == pytest.approx(gzsl, abs=1e-3)
        assert (r["zsl_ap"] != "") == (bool(space.unseen[i]) and int(r["num_positives"]) > 0)
    assert sum(int(r["num_positives"]) for r in rows) == int(labels.sum())


def test_diverse_subset_is_table4_protocol():
    rng = np.random.default_rng(0)
    num_labels, unseen = 20, np.arange(0, 20, 2)  # 10 unseen labels
    labels = (rng.random((50, num_labels)) < 0.3).astype(np.float32)
    labels[:5, :] = 1.0  # 5 images with all 20 labels: > 6 unseen and > 6 in total
    scores = rng.random((50, num_labels)).astype(np.float32)
    collector = evaluator._DiverseCollector(unseen, min_labels=6)
    for lo in range(0, 50, 8):  # streamed in batches
        collector.update(scores[lo:lo + 8], labels[lo:lo + 8])
    got = collector.result(k=10)
    zsl_rows = labels[:, unseen].sum(1) > 6
    gzsl_rows = labels.sum(1) > 6
    assert got["zsl"]["num_images"] == zsl_rows.sum() >= 5
    assert got["gzsl"]["num_images"] == gzsl_rows.sum() > zsl_rows.sum()
    for task, rows in (("zsl", zsl_rows), ("gzsl", gzsl_rows)):
        ref = evaluate_scores(scores[rows], labels[rows], unseen, ks=(10,))[task]
        for key in ("P@10", "R@10", "F1@10"):
            assert got[task][key] == pytest.approx(ref[key])
    empty = evaluator._DiverseCollector(unseen, 6)
    assert empty.result(10)["zsl"] == {"num_images": 0, "P@10": None, "R@10": None,
                                       "F1@10": None}


def test_random_baseline_is_seeded(demo_dir, tmp_path):
    def run(seed, out):
        return evaluator.evaluate(EvalConfig(baseline="random", data_dir=demo_dir,
                                              output_dir=str(tmp_path / out), seed=seed,
                                              ks=(3,)), progress=False)

    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    assert a["zsl"]["mAP"] == b["zsl"]["mAP"] and a["gzsl"]["F1@3"] == b["gzsl"]["F1@3"]
    assert a["zsl"]["mAP"] != c["zsl"]["mAP"]
    assert a["method"] == "Random (seed 0)" and a["seed"] == 0
    assert os.path.isfile(tmp_path / "a" / "random_test_metrics.json")


def test_cli_prints_tables(model_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "sdl_tf.evaluate", f"--model_dir={model_dir}", "--split=val",
         f"--output_dir={tmp_path}", "--ks=3", "--noprogress"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| ZSL |" in proc.stdout and "mAP" in proc.stdout
    with open(tmp_path / "val_metrics.json") as f:
        assert json.load(f)["ks"] == [3]


def test_label_space_mismatch_is_refused(model_dir, tmp_path):
    rng = np.random.default_rng(0)
    LabelSpace.create(["x", "y"], [False, True], rng.normal(size=(2, 4))).save(str(tmp_path))
    with pytest.raises(ValueError, match="label space") as refused:
        evaluator.evaluate(EvalConfig(model_dir=model_dir, data_dir=str(tmp_path)),
                            progress=False)
    assert isinstance(refused.value, errors.SDLError)  # a user's input: one line


def test_settings_taken_from_the_run_are_said(model_dir, demo_dir, tmp_path, capsys):
    evaluator.evaluate(EvalConfig(model_dir=model_dir, output_dir=str(tmp_path / "a")),
                       progress=False)
    err = capsys.readouterr().err
    assert (f"from the run's config.json: data_dir={demo_dir}, ks=3,5, scoring=max"
            in err), err
    evaluator.evaluate(EvalConfig(model_dir=model_dir, output_dir=str(tmp_path / "b"),
                                  ks=(3,), scoring="max"), progress=False)
    err = capsys.readouterr().err
    assert f"from the run's config.json: data_dir={demo_dir}\n" in err
    evaluator.evaluate(EvalConfig(model_dir=model_dir, output_dir=str(tmp_path / "c"),
                                  data_dir=demo_dir, ks=(3,), scoring="max"), progress=False)
    assert "from the run's" not in capsys.readouterr().err


def test_missing_model_dir_names_the_command_that_writes_it(tmp_path):
    with pytest.raises(errors.MissingPathError, match="python -m sdl_tf.train"):
        evaluator.evaluate(EvalConfig(model_dir=str(tmp_path / "nothing")), progress=False)


def test_unseen_from_data_scores_a_model_with_the_data_splits_unseen_labels(
        model_dir, demo_dir, tmp_path):
    # A model whose label space has no unseen label (as if trained on all of them) is scored
    # with the data's zero-shot split: the supervised upper bound of that split.
    import shutil

    space = LabelSpace.load(model_dir)
    all_seen = tmp_path / "all_seen"
    shutil.copytree(model_dir, all_seen, ignore=shutil.ignore_patterns("eval"))
    LabelSpace.create(space.names, np.zeros(space.num_labels, bool), space.vectors).save(
        str(all_seen))
    plain = evaluator.evaluate(EvalConfig(model_dir=str(all_seen), data_dir=demo_dir,
                                          output_dir=str(tmp_path / "a")), progress=False)
    split = evaluator.evaluate(EvalConfig(model_dir=str(all_seen), data_dir=demo_dir,
                                          output_dir=str(tmp_path / "b"), unseen_from_data=True),
                               progress=False)
    reference = evaluator.evaluate(EvalConfig(model_dir=model_dir, output_dir=str(tmp_path / "c")),
                                   progress=False)
    assert split["method"].endswith("[unseen labels of the data]")
    for task in ("zsl", "gzsl"):
        assert split[task]["mAP"] == pytest.approx(reference[task]["mAP"], rel=1e-6)
    assert np.isnan(plain["zsl"]["mAP"])  # without the data's flags: no unseen label


def test_evaluate_reports_row_usage(model_dir, tmp_path):
    summary = evaluator.evaluate(EvalConfig(model_dir=model_dir, output_dir=str(tmp_path),
                                             batch_size=10), progress=False)
    usage = summary["row_usage"]
    assert usage["k"] == 5 and usage["num_rows"] == 2 and usage["num_images"] == 32
    assert len(usage["share"]) == 2 and sum(usage["share"]) == pytest.approx(1.0)
    assert 0.0 <= usage["entropy_normalized"] <= 1.0 + 1e-9
    assert -1.0 <= usage["mean_cosine"] <= 1.0
    with open(tmp_path / "test_metrics.json") as f:
        assert json.load(f)["row_usage"]["share"] == pytest.approx(usage["share"])
    md = (tmp_path / "test_metrics.md").read_text()
    assert "Row usage" in md and "| Row | 1 | 2 |" in md
    random = evaluator.evaluate(EvalConfig(baseline="random", data_dir=summary["data_dir"],
                                            output_dir=str(tmp_path / "r"), ks=(3,)),
                                 progress=False)
    assert "row_usage" not in random


def test_evaluate_with_feature_cache_dir_matches_the_images(demo_dir, tmp_path, capsys):
    from sdl_tf.training import loop
    from tests.helpers.train_configs import tiny_config, tiny_model

    # A frozen backbone's run (the features of its training images cached too).
    cfg = tiny_config(demo_dir, tmp_path / "run", epochs=1, steps_per_epoch=2,
                      checkpoint_every_steps=2, cache_backbone_features=True,
                      data=DataConfig(data_dir=demo_dir, val_split="none", val_fraction=0.2,
                                      augment_mode="flip"),
                      model=tiny_model(trainable_backbone=False, pooling="attention"))
    loop.train(cfg, progress=False)
    run = str(tmp_path / "run")
    plain = evaluator.evaluate(EvalConfig(model_dir=run, output_dir=str(tmp_path / "e0")),
                               progress=False)
    capsys.readouterr()
    store = str(tmp_path / "store")
    first = evaluator.evaluate(EvalConfig(model_dir=run, output_dir=str(tmp_path / "e1"),
                                          feature_cache_dir=store), progress=False)
    assert "computed once" in capsys.readouterr().err
    again = evaluator.evaluate(EvalConfig(model_dir=run, output_dir=str(tmp_path / "e2"),
                                          feature_cache_dir=store), progress=False)
    assert "loaded from" in capsys.readouterr().err
    for task in ("zsl", "gzsl"):  # float16 features: mAP within a fraction of a point
        assert first[task]["mAP"] == pytest.approx(plain[task]["mAP"], abs=0.5)
        assert again[task]["mAP"] == first[task]["mAP"]
    assert first["zsl"]["num_images"] == plain["zsl"]["num_images"]
