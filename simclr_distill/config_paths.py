"""Any field of a (nested) config dataclass by its dotted path: the type annotation a path
names, a text parsed as a value of that type, and a config printed as PATH=VALUE lines that
parse back to it. Used by `settings` for --set and --print_config; knows nothing of flags.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Iterator


def field_type(cls: type, path: str, text: str) -> Any:
  """The annotation of the field `path` names in dataclass `cls`.

  Raises:
    ValueError: starting "--set=`text`: ", for a path that names no field (the fields at that
      level are listed, with a close match), a value's sub-field, or a group of fields.
  """
  parts = path.split(".")
  for i, name in enumerate(parts):
    where = ".".join(parts[:i])
    fields = [f.name for f in dataclasses.fields(cls)]
    if name not in fields:
      close = difflib.get_close_matches(name, fields, n=1)
      raise ValueError(
          f"--set={text}: {where or 'the config'} ({cls.__name__}) has no field {name!r}"
          + (f" (did you mean {close[0]!r}?)" if close else "")
          + f"; its fields: {', '.join(sorted(fields))}")
    hint = typing.get_type_hints(cls)[name]
    if i == len(parts) - 1:
      break
    if not is_dataclass_type(hint):
      raise ValueError(f"--set={text}: {'.'.join(parts[:i + 1])} is a value ({describe(hint)}), "
                       "not a group of fields")
    cls = hint
  if is_dataclass_type(hint):
    raise ValueError(f"--set={text}: {path} is a group of fields; set one of them: "
                     f"{', '.join(f'{path}.{f.name}' for f in dataclasses.fields(hint))}")
  return hint


def parse_value(text: str, hint: Any) -> Any:
  """Parses `text` as a value of the type annotation `hint` (see `parse_assignment`).

  Raises:
    ValueError: saying what in `text` is not of the type.
  """
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (typing.Union, types.UnionType):
    others = [a for a in args if a is not type(None)]
    if len(others) < len(args) and text.strip().lower() == "none":
      return None
    if len(others) != 1:
      raise ValueError(f"cannot parse a value of {hint}")
    return parse_value(text, others[0])
  if origin is tuple:
    if len(args) == 2 and args[1] is Ellipsis:
      items = [t.strip() for t in text.split(",")] if text.strip() else []
      return tuple(parse_value(item, args[0]) for item in items)
    parts = text.split(":", len(args) - 1)
    if len(parts) != len(args):
      raise ValueError(f"{text!r} is not {len(args)} values joined by ':'")
    return tuple(parse_value(p, a) for p, a in zip(parts, args))
  if hint is bool:
    word = text.strip().lower()
    if word in ("true", "1"):
      return True
    if word in ("false", "0"):
      return False
    raise ValueError(f"{text!r} is not true or false (1 or 0)")
  if hint is int:
    try:
      return int(text.strip())
    except ValueError:
      raise ValueError(f"{text!r} is not an integer") from None
  if hint is float:
    try:
      value = float(text.strip())
    except ValueError:
      raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
      raise ValueError(f"{text!r} is not a finite number")
    return value
  if hint is str:
    return text
  raise ValueError(f"cannot parse a value of {hint}")


def describe(hint: Any) -> str:
  """The type annotation `hint` in words, for messages: "comma-separated integers"."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (typing.Union, types.UnionType):
    return " or ".join(describe(a) for a in args if a is not type(None)) + (
        " or none" if type(None) in args else "")
  if origin is tuple:
    if len(args) == 2 and args[1] is Ellipsis:
      return f"comma-separated {_PLURALS.get(args[0], describe(args[0]) + ' items')}"
    return " and ".join(describe(a) for a in args) + " joined by ':'"
  return _NOUNS.get(hint, getattr(hint, "__name__", str(hint)))


_NOUNS = {int: "an integer", float: "a number", bool: "true or false", str: "a text"}
_PLURALS = {int: "integers", float: "numbers", bool: "true/false values", str: "texts"}


# ---- The resolved config as text -----------------------------------------------------------------


def format_config(config: Any) -> str:
  """The resolved `config` as sorted PATH=VALUE lines, in the syntax --set takes.

  Lists are comma-separated, None is "none", booleans "true"/"false". Records in a tuple
  (`StudyConfig.encoders`) are shown as PATH[i].FIELD=VALUE; --set refuses those paths and
  names the flag that sets them.
  """
  return "\n".join(f"{path}={format_value(value)}" for path, value in sorted(flatten(config)))


def format_value(value: Any) -> str:
  """`value` as `parse_value` reads it back."""
  if value is None:
    return "none"
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, tuple):
    return ",".join(":".join(map(format_value, v)) if isinstance(v, tuple) else format_value(v)
                    for v in value)
  return str(value)


def flatten(config: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
  for f in dataclasses.fields(config):
    value, path = getattr(config, f.name), prefix + f.name
    if dataclasses.is_dataclass(value):
      yield from flatten(value, path + ".")
    elif isinstance(value, tuple) and value and all(dataclasses.is_dataclass(v) for v in value):
      for i, item in enumerate(value):
        yield from flatten(item, f"{path}[{i}].")
    else:
      yield path, value


def is_dataclass_type(hint: Any) -> bool:
  return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def item_type(hint: Any) -> Any:
  """The element type of a `tuple[X, ...]` annotation, else `hint` itself."""
  args = typing.get_args(hint)
  if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
    return args[0]
  return hint
