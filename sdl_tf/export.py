r"""Exports a trained SDL model as a TF Serving SavedModel.

    python -m sdl_tf.export --model_dir=runs/demo --export_dir=saved_models --name=sdl \
        --version=1 [--keras_model=path.keras | --checkpoint] [--top_k=10] [--overwrite]

Writes `<export_dir>/<name>/<version>/` (signatures `serving_default`, `score_labels`,
`matrices`; see `sdl_tf.serving.export_lib`). Flags can also come from `--flagfile`.
"""

from absl import flags

from sdl_tf import config_flags
from sdl_tf.config import ExportConfig


def main(argv):
    del argv
    from absl import logging

    from sdl_tf.serving import export_lib

    # TF INFO lines (signature input renames, asset writing) drown the result line.
    logging.set_verbosity(logging.WARNING)

    # ExportConfig refuses --keras_model with --checkpoint; errors go to cli.run's one line.
    config = config_flags.config_from_flags(ExportConfig, flags.FLAGS)
    path = export_lib.export_from_config(config)
    print(f"exported SavedModel to {path}")


def define_flags() -> None:
    """Flags are defined only when run as a program (importing this module defines none)."""
    config_flags.define_flags(ExportConfig)


def run() -> None:
    """Console-script entry point (`sdl-export`)."""
    from sdl_tf import cli

    cli.run(main, define_flags)


if __name__ == "__main__":
    run()
