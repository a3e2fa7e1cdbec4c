"""What every command-line entry point shares: one-line errors a person can act on.

`run(main)` is `absl.app.run(main)`, except that the errors of a user's inputs (a missing or
incomplete data dir, model dir, export or file, and the project's own input errors) print one
line, `<command>: error: <message>`, and exit with status 1 instead of a traceback. The
messages name the path and, where a project command creates it, that command
(`missing_data_hint`, `missing_model_hint`, `missing_export_hint`). Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import os
import sys

# data_prep module per word that a data dir's name usually contains (configs use data/<name>).
_PREP_MODULES = (("coco", "coco"), ("nus", "nus_wide"), ("open", "open_images"),
                 ("demo", "demo"))


def missing_data_hint(data_dir: str) -> str:
    """The command that prepares `data_dir`, guessed from its name (e.g. data/coco)."""
    name = os.path.basename(os.path.normpath(data_dir)).lower()
    for word, module in _PREP_MODULES:
        if word in name:
            return f"create it with `python -m data_prep.{module} ... --output_dir={data_dir}`"
    return (f"create it with `python -m data_prep.<coco|nus_wide|open_images|manifest|demo> ... "
            f"--output_dir={data_dir}`")


def missing_model_hint(model_dir: str) -> str:
    """The command that writes a trained model dir."""
    return (f"train one with `python -m sdl_tf.train --flagfile=configs/<name>.flags "
            f"--model_dir={model_dir}`")


def missing_export_hint(path: str) -> str:
    """The command that writes an export."""
    return (f"export a trained run with `python -m sdl_tf.export --model_dir=<run> "
            f"--export_dir={os.path.dirname(os.path.normpath(path)) or '.'}`, or pass a model dir")


# The project's exception types for bad inputs, by module. Looked up in `sys.modules` only: a
# module the command never imported cannot have raised them, and the serving client must not
# import TensorFlow just to format an error.
_PROJECT_ERRORS = (("data_prep.common", "DataPrepError"), ("sdl_tf.backbones", "BackboneError"),
                   ("sdl_tf.word_vectors", "MissingVectorsError"),
                   ("sdl_tf.exporting", "ExportError"), ("sdl_tf.predict", "PredictError"),
                   ("sdl_tf.retrieval", "RetrievalError"),
                   ("sdl_tf.serving_client", "ServingError"),
                   ("sdl_tf.convert_weights", "ConversionError"))


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that describe bad inputs, not bugs."""
    types: list[type[BaseException]] = [FileNotFoundError, NotADirectoryError, IsADirectoryError,
                                        PermissionError]
    for module, name in _PROJECT_ERRORS:
        # Run as `python -m <module>`, the module's classes live in __main__.
        mod = sys.modules.get("__main__") if _program() == module else sys.modules.get(module)
        if mod is not None and isinstance(getattr(mod, name, None), type):
            types.append(getattr(mod, name))
    return tuple(types)


def _program() -> str:
    """`sdl_tf.train` for `python -m sdl_tf.train`, else the script's file name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return spec.name
    return os.path.basename(sys.argv[0]) or "sdl_tf"


def run(main) -> None:
    """`absl.app.run(main)` with one-line errors for bad inputs (see the module docstring)."""
    from absl import app

    def guarded(argv):
        try:
            return main(argv)
        except Exception as e:  # noqa: BLE001 - filtered right below, others re-raised
            if not isinstance(e, _user_error_types()):
                raise
            message = str(e) or type(e).__name__
            if isinstance(e, OSError) and e.filename and str(e.filename) not in message:
                message = f"{e.filename}: {message}"
            print(f"{_program()}: error: {message}", file=sys.stderr)
            sys.exit(1)

    app.run(guarded)
