"""What every command-line entry point shares: one-line errors a person can act on.

`run(main)` is `absl.app.run(main)`, except that a bad input prints one line,
`<command>: error: <message>`, and exits with status 1 instead of a traceback. A bad input is
`sdl_tf.errors.SDLError` (the library's own: its message names the path / flag / line and,
where a project command creates what is missing, that command) or a file the system refused
(`FileNotFoundError`, `NotADirectoryError`, `IsADirectoryError`, `PermissionError`). Anything
else is a bug and keeps its traceback. Commands report errors only this way: they let these
propagate (no `SystemExit(message)`, no print + exit status of their own).
"""

from __future__ import annotations

import os
import sys

from sdl_tf import errors

# What a user can fix; every other exception is a bug and keeps its traceback.
USER_ERRORS = (errors.SDLError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def _program() -> str:
    """`sdl_tf.train` for `python -m sdl_tf.train`, else the script's name (`sdl-train`)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return spec.name
    return os.path.basename(sys.argv[0]) or "sdl_tf"


def error_line(error: BaseException) -> str:
    """The one line printed for a bad input: `<command>: error: <message>`."""
    message = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in message:
        message = f"{error.filename}: {message}"
    return f"{_program()}: error: {message}"


def run(main, define_flags=None, quiet: bool = False) -> None:
    """`absl.app.run(main)` with one-line errors for bad inputs (see the module docstring).

    Args:
        main: the command's `main(argv)`.
        define_flags: defines the command's flags first (a console script's entry point).
        quiet: log only warnings and errors (TF/gensim INFO lines would drown a command's
            printed results).
    """
    from absl import app, flags, logging

    if define_flags is not None:
        define_flags()

    # `--help`/`--helpshort` list the key flags of the module absl files under sys.argv[0]: the
    # CLI module itself under `python -m`, but a console script's argv[0] is `.../sdl-train`
    # while the flags were defined by `sdl_tf.train`; file them under argv[0] too.
    if main.__module__ != "__main__":
        for flag in flags.FLAGS.get_key_flags_for_module(main.__module__):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

    def guarded(argv):
        if quiet:
            logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except USER_ERRORS as e:
            print(error_line(e), file=sys.stderr)
            sys.exit(1)
        except BrokenPipeError:
            # The reader of stdout went away (`... | head`): stop quietly, and keep Python's
            # final flush of stdout from failing again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)

    app.run(guarded)
