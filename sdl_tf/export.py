r"""Exports a trained SDL model as a TF Serving SavedModel.

    python -m sdl_tf.export --model_dir=runs/demo --export_dir=saved_models --name=sdl \
        --version=1 [--keras_model=path.keras | --checkpoint] [--top_k=10] [--overwrite]

Writes `<export_dir>/<name>/<version>/` (signatures `serving_default`, `score_labels`,
`matrices`; see `sdl_tf.exporting`). Flags can also come from `--flagfile`.
"""

from absl import app, flags


def main(argv):
    del argv
    from absl import logging

    from sdl_tf import exporting

    # TF INFO lines (signature input renames, asset writing) drown the result line.
    logging.set_verbosity(logging.WARNING)

    f = flags.FLAGS
    if f.keras_model and f.checkpoint:
        raise app.UsageError("give at most one of --keras_model and --checkpoint")
    config = exporting.ExportConfig(
        model_dir=f.model_dir,
        export_dir=f.export_dir,
        name=f.name,
        version=f.version,
        keras_model=f.keras_model,
        checkpoint=f.checkpoint,
        top_k=f.top_k,
        overwrite=f.overwrite,
    )
    try:
        path = exporting.export_from_config(config)
    except (exporting.ExportError, FileNotFoundError) as e:
        raise SystemExit(f"export failed: {e}") from None
    print(f"exported SavedModel to {path}")


def _define_flags():
    """Flags are defined only when run as a program (importing this module defines none)."""
    flags.DEFINE_string(
        "model_dir", None, "Training run directory (final.keras, labels.json, label_vectors.npy)."
    )
    flags.DEFINE_string(
        "keras_model", None, "A .keras file to export instead of <model_dir>/final.keras."
    )
    flags.DEFINE_bool(
        "checkpoint", False,
        "Rebuild the model from config.json and restore the latest checkpoint (not final.keras).",
    )
    flags.DEFINE_string("export_dir", "saved_models", "Base export directory.")
    flags.DEFINE_string("name", "sdl", "Model name (TF Serving's model name).")
    flags.DEFINE_integer("version", None, "Version number; default: next free one.")
    flags.DEFINE_integer("top_k", 10, "K of the serving_default top-K outputs.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing version directory.")
    flags.mark_flag_as_required("model_dir")


if __name__ == "__main__":
    from sdl_tf import cli

    _define_flags()
    cli.run(main)
