"""The project's one error type for bad inputs, and the hints that say how to fix them.

Library code raises `SDLError` (or a subclass) when a user's input is wrong: a missing or
incomplete data dir, model dir or export, a bad flag value, a malformed file. The message names
the path / flag / line; `hint` is the command that would create what is missing. Only
`sdl_tf.cli.run` prints these (every command, the data_prep ones included, runs through it), as
one line without a traceback; any other exception is a bug and keeps its traceback.

`MissingPathError` is also a `FileNotFoundError`, and `ConfigError` a `ValueError`, so callers
that catch the builtin still do.
This module imports nothing from the project (floor 0): every layer may raise these.
"""

from __future__ import annotations

import os

# data_prep module per word that a data dir's name usually contains (configs use data/<name>).
_PREP_MODULES = (("coco", "coco"), ("nus", "nus_wide"), ("open", "open_images"),
                 ("demo", "demo"), ("mosaic", "mosaics"))


class SDLError(Exception):
    """A bad input a user can fix.

    Args:
        message: what is wrong, naming the file / flag / label / line.
        hint: what to do about it (e.g. the command that creates a missing directory); printed
            after the message.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class MissingPathError(SDLError, FileNotFoundError):
    """A file or directory the user pointed at (or that a command should have written) is
    absent or incomplete."""


class ConfigError(SDLError, ValueError):
    """A config value (a flag) out of its range, or in conflict with another one."""


def missing_data_hint(data_dir: str) -> str:
    """The command that prepares `data_dir`, guessed from its name (e.g. data/coco)."""
    name = os.path.basename(os.path.normpath(data_dir)).lower()
    for word, module in _PREP_MODULES:
        if word in name:
            return f"create it with `python -m data_prep.{module} ... --output_dir={data_dir}`"
    return (f"create it with `python -m data_prep.<coco|nus_wide|open_images|manifest|mosaics|"
            f"demo> ... --output_dir={data_dir}`")


def missing_model_hint(model_dir: str) -> str:
    """The command that writes a trained model dir."""
    return (f"train one with `python -m sdl_tf.train --flagfile=configs/<name>.flags "
            f"--model_dir={model_dir}`")


def missing_export_hint(path: str) -> str:
    """The command that writes an export."""
    return (f"export a trained run with `python -m sdl_tf.export --model_dir=<run> "
            f"--export_dir={os.path.dirname(os.path.normpath(path)) or '.'}`, or pass a model dir")
