"""absl flags generated from frozen config dataclasses, so each hyperparameter is one field.

A config field is declared with `field(default, help, **metadata)`; `define_flags` turns every
field into a flag named after it, and `config_from_flags` builds the frozen config back from
the parsed flags; `flagfile_text` writes a config back as flagfile lines (a run's `flags.txt`,
re-runnable with `--flagfile`). Flag type from the field type: bool -> DEFINE_bool,
int -> DEFINE_integer, float -> DEFINE_float, str -> DEFINE_string (DEFINE_enum when metadata
has `choices`), tuple[int | str | float, ...] -> DEFINE_list; `X | None` is X with a None
default allowed. Metadata keys: `help`, `choices`, `required` (flag default None and must be
given; the config default is unchanged), `flag` (False: no flag, the field keeps its default),
`lower_bound` / `upper_bound` (int and float flags). A nested dataclass field
(`TrainConfig.data`) is flattened without a prefix (`--augment`, not `--data.augment`), so
names must be unique over the tree.

Entry points only: library code never reads flags (docs/design.md).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from absl import flags

# Flags this module defines belong to the module calling `define_flags` (absl's key flags, which
# `--help` lists), as if that module had called DEFINE_* itself.
flags.disclaim_key_flags()

_LIST_ELEMENTS = (int, str, float)


def field(default: Any = dataclasses.MISSING, help: str = "", **metadata) -> Any:
    """`dataclasses.field(default=default, metadata={"help": help, **metadata})`."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def _base_type(tp: Any) -> Any:
    """`X | None` -> X; any other type unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _list_element(tp: Any) -> type | None:
    """The element type of `tuple[E, ...]` (E in int/str/float), else None."""
    args = typing.get_args(tp)
    if (typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis
            and args[0] in _LIST_ELEMENTS):
        return args[0]
    return None


def _flag_fields(config_cls: type, exclude: Iterable[str]) -> Iterator[tuple[Any, Any]]:
    """(dataclasses.Field, resolved base type) of every field of `config_cls` that is a flag."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if f.name not in exclude and f.metadata.get("flag", True):
            yield f, _base_type(hints[f.name])


def _default(f: Any) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def define_flags(config_cls: type, *, flag_values: flags.FlagValues | None = None,
                 exclude: Iterable[str] = (), required: Iterable[str] = (),
                 overrides: Mapping[str, Any] | None = None) -> list[str]:
    """Defines one absl flag per field of `config_cls` (nested dataclasses flattened).

    Args:
      config_cls: a dataclass whose fields carry `help` (and optionally the other metadata keys
        of the module docstring).
      flag_values: where to define them (default: the global `flags.FLAGS`).
      exclude: top-level field names to skip (defined by hand, or not flags for this program).
      required: names of flags that must be given, besides those with `required` metadata.
      overrides: flag name -> flag default, where the program's default differs from the field's.

    Returns:
      The names of the flags defined, in field order.

    Raises:
      TypeError: a field whose type has no flag type (exclude it or give it `flag=False`).
    """
    fv = flags.FLAGS if flag_values is None else flag_values
    overrides, required = dict(overrides or {}), set(required)
    names = []
    for f, tp in _flag_fields(config_cls, exclude):
        if dataclasses.is_dataclass(tp):
            names += define_flags(tp, flag_values=fv, required=required, overrides=overrides)
            continue
        meta, name = f.metadata, f.name
        is_required = bool(meta.get("required")) or name in required
        default = None if is_required else overrides.get(name, _default(f))
        kw = {"flag_values": fv, "required": is_required}
        bounds = {k: meta[k] for k in ("lower_bound", "upper_bound") if k in meta}
        help_text = meta.get("help") or f"{config_cls.__name__}.{name}"
        element = _list_element(tp)
        if "choices" in meta:
            flags.DEFINE_enum(name, default, list(meta["choices"]), help_text, **kw)
        elif tp is bool:
            flags.DEFINE_bool(name, default, help_text, **kw)
        elif tp is int:
            flags.DEFINE_integer(name, default, help_text, **bounds, **kw)
        elif tp is float:
            flags.DEFINE_float(name, default, help_text, **bounds, **kw)
        elif tp is str:
            flags.DEFINE_string(name, default, help_text, **kw)
        elif element is not None:
            # absl list flags hold strings; config_from_flags converts them back to `element`.
            listed = None if default is None else [str(v) for v in default]
            flags.DEFINE_list(name, listed, help_text, **kw)
        else:
            raise TypeError(f"{config_cls.__name__}.{name}: no flag type for {tp!r}; exclude "
                            "it or give it metadata flag=False")
        names.append(name)
    return names


def config_from_flags(config_cls: type, flag_values: flags.FlagValues | None = None, *,
                      exclude: Iterable[str] = (), **values) -> Any:
    """Builds a (nested) frozen `config_cls` from parsed flags.

    Args:
      config_cls: the dataclass given to `define_flags`.
      flag_values: parsed flags (default: the global `flags.FLAGS`).
      exclude: top-level fields not read from flags (they keep their default).
      **values: top-level field values given directly instead of read from flags (e.g. a
        field a program parses from a hand-defined flag).

    Returns:
      `config_cls(...)`; list flags become tuples of the field's element type, and fields
      without a flag (metadata `flag=False`) keep their default.
    """
    fv = flags.FLAGS if flag_values is None else flag_values
    kwargs = dict(values)
    for f, tp in _flag_fields(config_cls, set(exclude) | set(values)):
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = config_from_flags(tp, fv)
            continue
        value = fv[f.name].value
        element = _list_element(tp)
        if element is not None and value is not None:
            value = tuple(element(v) for v in value)
        kwargs[f.name] = value
    return config_cls(**kwargs)


def _flag_items(config: Any) -> Iterator[tuple[str, Any]]:
    """(flag name, value) of every flag field of the (nested) dataclass instance `config`."""
    for f, tp in _flag_fields(type(config), ()):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(tp):
            yield from _flag_items(value)
        else:
            yield f.name, value


def flagfile_text(config: Any, *, exclude: Iterable[str] = ("overwrite",)) -> str:
    """`config` as flagfile lines: the one writer of a run's `flags.txt`.

    One line per flag of `define_flags(type(config))`, sorted by name and formatted by absl's
    own serializers (`--augment` / `--noaugment`, `--eval_ks=3,5`), so parsing the text with
    `--flagfile` and `config_from_flags` gives back an equal config. Fields without a flag keep
    their default and are not written; flags whose value is None are left out.

    Args:
      config: a frozen config dataclass instance (e.g. the resolved `TrainConfig`).
      exclude: flag names left out; by default `overwrite`, so that rerunning a run's
        `flags.txt` resumes the run instead of discarding it.

    Returns:
      The lines, each ending in a newline.
    """
    fv = flags.FlagValues()
    define_flags(type(config), flag_values=fv)
    for name, value in _flag_items(config):
        # List flags hold strings (`define_flags`); the serializer quotes commas inside them.
        fv[name].value = [str(v) for v in value] if isinstance(value, tuple) else value
    exclude = set(exclude)
    lines = [fv[name].serialize() for name in sorted(fv)
             if name not in exclude and fv[name].value is not None]
    return "\n".join(lines) + "\n"
