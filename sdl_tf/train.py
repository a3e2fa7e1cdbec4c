r"""Trains SDL: `python -m sdl_tf.train --flagfile=configs/coco.flags [--flag=value ...]`.

Rerunning the same command resumes from the last checkpoint in --model_dir (mid-epoch too); a
finished run says so and exits unless --overwrite or a larger --epochs is given.
"""

from __future__ import annotations

from absl import flags

from sdl_tf import config_flags
from sdl_tf.config import TrainConfig


def define_flags() -> None:
    """Defines the training flags (entry point only; library code never reads FLAGS).

    One flag per field of TrainConfig and its nested DataConfig / ModelConfig (same names,
    defaults and help, see `sdl_tf.config_flags`), plus --progress.
    """
    config_flags.define_flags(TrainConfig)
    flags.DEFINE_bool("progress", True, "Console progress bar.")


def main(argv):
    del argv
    from sdl_tf.training import loop

    FLAGS = flags.FLAGS  # noqa: N806
    config = config_flags.config_from_flags(TrainConfig, FLAGS)
    # flags.txt: the resolved config as flagfile lines, without --overwrite, so that rerunning
    # it resumes the run instead of wiping it (--progress is not part of the config).
    flags_text = config_flags.flagfile_text(config)
    result = loop.train(config, flags_text=flags_text, progress=FLAGS.progress)
    print(f"status: {result['status']}; step {result['step']}; model {result['model_path']}")


def run() -> None:
    """Console-script entry point (`sdl-train`)."""
    from sdl_tf import cli

    cli.run(main, define_flags)


if __name__ == "__main__":
    run()
