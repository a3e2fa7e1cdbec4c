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


# The project's exception types for bad inputs, by library module. Looked up in `sys.modules`
# only: a module the command never imported cannot have raised them, and the serving client must
# not import TensorFlow just to format an error. They all live in library modules, never in a
# CLI module, so the lookup is the same for `python -m sdl_tf.<cli>` (where the CLI module is
# `__main__`) and for a console script (`sdl-train`, whose `__main__` is the generated wrapper).
_PROJECT_ERRORS = (("data_prep.common", "DataPrepError"),
                   ("sdl_tf.modeling.backbones", "BackboneError"),
                   ("sdl_tf.modeling.tresnet_weights", "ConversionError"),
                   ("sdl_tf.labels.word_vectors", "MissingVectorsError"),
                   ("sdl_tf.serving.export_lib", "ExportError"),
                   ("sdl_tf.serving.tagger", "PredictError"),
                   ("sdl_tf.serving.retrieval", "RetrievalError"),
                   ("sdl_tf.serving.client", "ServingError"))


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that describe bad inputs, not bugs."""
    types: list[type[BaseException]] = [FileNotFoundError, NotADirectoryError, IsADirectoryError,
                                        PermissionError]
    for module, name in _PROJECT_ERRORS:
        error = getattr(sys.modules.get(module), name, None)
        if isinstance(error, type):
            types.append(error)
    return tuple(types)


def _program() -> str:
    """`sdl_tf.train` for `python -m sdl_tf.train`, else the script's name (`sdl-train`)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return spec.name
    return os.path.basename(sys.argv[0]) or "sdl_tf"


def run(main) -> None:
    """`absl.app.run(main)` with one-line errors for bad inputs (see the module docstring)."""
    from absl import app, flags

    # `--help`/`--helpshort` list the key flags of the module absl files under sys.argv[0]: the
    # CLI module itself under `python -m`, but a console script's argv[0] is `.../sdl-train`
    # while the flags were defined by `sdl_tf.train`; file them under argv[0] too.
    if main.__module__ != "__main__":
        for flag in flags.FLAGS.get_key_flags_for_module(main.__module__):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

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
