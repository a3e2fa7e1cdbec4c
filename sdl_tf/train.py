r"""Trains SDL: `python -m sdl_tf.train --flagfile=configs/coco.flags [--flag=value ...]`.

Rerunning the same command resumes from the last checkpoint in --model_dir (mid-epoch too); a
finished run says so and exits unless --overwrite or a larger --epochs is given.
"""

from __future__ import annotations

from absl import flags

from sdl_tf import config_flags
from sdl_tf.config import TrainConfig

_OWN_FLAGS: list[str] = []


def define_flags() -> None:
    """Defines the training flags (entry point only; library code never reads FLAGS).

    One flag per field of TrainConfig and its nested DataConfig / ModelConfig (same names,
    defaults and help, see `sdl_tf.config_flags`), plus --progress.
    """
    before = set(flags.FLAGS)
    config_flags.define_flags(TrainConfig)
    flags.DEFINE_bool("progress", True, "Console progress bar.")
    _OWN_FLAGS[:] = sorted(set(flags.FLAGS) - before)


def config_from_flags(FLAGS) -> TrainConfig:  # noqa: N803 (absl convention)
    """Builds the frozen config from parsed flags."""
    return config_flags.config_from_flags(TrainConfig, FLAGS)


def main(argv):
    del argv
    from sdl_tf.training import trainer

    FLAGS = flags.FLAGS  # noqa: N806
    config = config_from_flags(FLAGS)
    # The resolved flags (defaults included) minus absl's own, re-runnable as a flagfile.
    # --overwrite is left out so rerunning flags.txt resumes instead of wiping the run.
    lines = [FLAGS[name].serialize() for name in _OWN_FLAGS
             if name not in ("overwrite", "progress") and FLAGS[name].value is not None]
    flags_text = "\n".join(lines) + "\n"
    result = trainer.train(config, flags_text=flags_text, progress=FLAGS.progress)
    print(f"status: {result['status']}; step {result['step']}; model {result['model_path']}")


def run() -> None:
    """Console-script entry point (`sdl-train`)."""
    from sdl_tf import cli

    define_flags()
    cli.run(main)


if __name__ == "__main__":
    run()
