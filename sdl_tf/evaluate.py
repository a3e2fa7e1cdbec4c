r"""Evaluates a trained run: ZSL/GZSL mAP and P/R/F1@K (Tables 1-2), diverse images (Table 4).

    python -m sdl_tf.evaluate --model_dir=runs/demo --split=test
    python -m sdl_tf.evaluate --baseline=random --data_dir=data/demo --output_dir=runs/random

Writes <split>_metrics.json, <split>_metrics.md and <split>_per_label_ap.csv into
<model_dir>/eval (or --output_dir) and prints the tables.
"""

from __future__ import annotations

from absl import flags

from sdl_tf import config_flags
from sdl_tf.config import EvalConfig


def define_flags() -> None:
    """Defines the evaluation flags (entry point only): EvalConfig's fields + --progress."""
    config_flags.define_flags(EvalConfig)
    flags.DEFINE_bool("progress", True, "Console progress bar.")


def main(argv):
    del argv
    from sdl_tf.evaluation import evaluator

    evaluator.evaluate(config_flags.config_from_flags(EvalConfig),
                       progress=flags.FLAGS.progress)


def run() -> None:
    """Console-script entry point (`sdl-evaluate`)."""
    from sdl_tf import cli

    cli.run(main, define_flags)


if __name__ == "__main__":
    run()
