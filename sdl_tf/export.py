r"""Exports a trained SDL model as a TF Serving SavedModel.

    python -m sdl_tf.export --model_dir=runs/demo --export_dir=saved_models --name=sdl \
        --version=1 [--keras_model=path.keras | --checkpoint] [--top_k=10] [--overwrite]

Writes `<export_dir>/<name>/<version>/` (signatures `serving_default`, `score_labels`,
`matrices`; see `sdl_tf.exporting`). Flags can also come from `--flagfile`.
"""

from absl import app, flags

_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Training run directory (final.keras, labels.json, label_vectors.npy)."
)
_KERAS_MODEL = flags.DEFINE_string(
    "keras_model", None, "A .keras file to export instead of <model_dir>/final.keras."
)
_CHECKPOINT = flags.DEFINE_bool(
    "checkpoint", False, "Rebuild the model from config.json and restore the latest checkpoint."
)
_EXPORT_DIR = flags.DEFINE_string("export_dir", "saved_models", "Base export directory.")
_NAME = flags.DEFINE_string("name", "sdl", "Model name (TF Serving's model name).")
_VERSION = flags.DEFINE_integer("version", None, "Version number; default: next free one.")
_TOP_K = flags.DEFINE_integer("top_k", 10, "K of the serving_default top-K outputs.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing version directory.")


def main(argv):
    del argv
    from sdl_tf import exporting

    if _KERAS_MODEL.value and _CHECKPOINT.value:
        raise app.UsageError("give at most one of --keras_model and --checkpoint")
    config = exporting.ExportConfig(
        model_dir=_MODEL_DIR.value,
        export_dir=_EXPORT_DIR.value,
        name=_NAME.value,
        version=_VERSION.value,
        keras_model=_KERAS_MODEL.value,
        checkpoint=_CHECKPOINT.value,
        top_k=_TOP_K.value,
        overwrite=_OVERWRITE.value,
    )
    try:
        path = exporting.export_from_config(config)
    except (exporting.ExportError, FileNotFoundError) as e:
        raise SystemExit(f"export failed: {e}") from None
    print(f"exported SavedModel to {path}")


if __name__ == "__main__":
    flags.mark_flag_as_required("model_dir")
    app.run(main)
