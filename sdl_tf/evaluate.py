r"""Evaluates a trained run: ZSL/GZSL mAP and P/R/F1@K (Tables 1-2), diverse images (Table 4).

    python -m sdl_tf.evaluate --model_dir=runs/demo --split=test
    python -m sdl_tf.evaluate --baseline=random --data_dir=data/demo --output_dir=runs/random

Writes <split>_metrics.json, <split>_metrics.md and <split>_per_label_ap.csv into
<model_dir>/eval (or --output_dir) and prints the tables.
"""

from __future__ import annotations

from absl import flags

from sdl_tf.config import EvalConfig

_E = EvalConfig(model_dir="x")


def define_flags() -> None:
    """Defines the evaluation flags (entry point only)."""
    f = flags
    f.DEFINE_string("model_dir", "", "Trained run directory (final.keras + labels).")
    f.DEFINE_string("data_dir", "", "Prepared dataset (default: the run's config.json).")
    f.DEFINE_string("split", _E.split, "Split to evaluate (test; val for model selection).")
    f.DEFINE_string("output_dir", "", "Output directory (default <model_dir>/eval).")
    f.DEFINE_string("model_file", _E.model_file, "Model file inside --model_dir.")
    f.DEFINE_list("ks", [], "K values of P/R/F1@K (default: the run's eval_ks).")
    f.DEFINE_integer("diverse_min_labels", _E.diverse_min_labels,
                     "Diverse subset: images with more than this many positives (Table 4).")
    f.DEFINE_integer("diverse_k", _E.diverse_k, "Top-K of the diverse subset.")
    f.DEFINE_integer("batch_size", _E.batch_size, "Batch size.")
    f.DEFINE_integer("max_images", _E.max_images, "Evaluate at most this many images (0 = all).")
    f.DEFINE_enum("baseline", "", ["", "random"], "random: seeded random scores, same protocol.")
    f.DEFINE_integer("seed", _E.seed, "Seed of the random baseline.")
    f.DEFINE_enum("scoring", "", ["", "max", "l2"], "Scoring (default: the run's).")
    f.DEFINE_bool("progress", True, "Console progress bar.")


def main(argv):
    del argv
    from sdl_tf import evaluation

    F = flags.FLAGS  # noqa: N806
    cfg = EvalConfig(
        model_dir=F.model_dir, data_dir=F.data_dir, split=F.split, output_dir=F.output_dir,
        model_file=F.model_file, ks=tuple(int(k) for k in F.ks),
        diverse_min_labels=F.diverse_min_labels, diverse_k=F.diverse_k, batch_size=F.batch_size,
        max_images=F.max_images, baseline=F.baseline, seed=F.seed, scoring=F.scoring,
    )
    evaluation.evaluate(cfg, progress=F.progress)


if __name__ == "__main__":
    from sdl_tf import cli

    define_flags()
    cli.run(main)
