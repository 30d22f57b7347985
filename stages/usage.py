"""`--help` of the stage commands: the stage's docstring, then its flags grouped as the README
groups them, each with its default or, for a setting, the value the preset gives it.

absl's own `--help` lists the flags of the module it was started as: under an installed console
script (`simclr-distill-distill`) that is the script's wrapper, which defines none, so it printed
only "USAGE ... [flags]". This text is built from the flags themselves and the settings table,
whatever started the command. `--helpfull` keeps absl's complete listing.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from typing import Any

from absl import flags

from simclr_distill import config as config_lib
from simclr_distill import config_paths, settings, study_config

HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort")

# The README's groups, in its order: (title, settings groups or flag names).
_SECTIONS = (
    ("configuration", ("preset", "set", "print_config", "always")),
    ("data", ("data",)),
    ("teachers", ("teachers",)),
    ("encoders", ("encoders",)),
    ("students", ("students",)),
    ("loss", ("loss",)),
    ("schedule", ("schedule",)),
    ("protocol", ("protocol",)),
    ("baselines", ("baseline",)),
    ("stage 1: SimCLR pretraining and probes", ("pretrain",)),
    ("stage 2: fine-tuning", ("finetune",)),
    ("the study", ("study", "steps")),
    ("data preparation", ("prepare", "prepare_stage")),
    ("scale: devices, shards, checkpoints", ("scale", "unsafe_load")),
    ("cluster (--launcher=slurm)", ("launcher", "dry_run", "wait", "slurm_*")),
)
_GENERAL = ("verbosity", "helpfull")


def wants_help(argv: list[str]) -> bool:
  """Whether `argv` asks for the stage's help (absl's other help flags keep absl's text)."""
  return any(word in HELP_FLAGS or word.startswith("--help=") for word in argv[1:])


def help_text(flag_values: flags.FlagValues, doc: str | None, program: str, root: str | None,
              argv: list[str]) -> str:
  """The text `--help` prints for the command whose module docstring is `doc`.

  Args:
    flag_values: the command's flags (all defined).
    doc: its module's docstring.
    program: argv[0].
    root: the config its settings build ("distill", "study", "prepare"), or None.
    argv: the command line, read for --preset (the values shown are that preset's).
  """
  width = min(shutil.get_terminal_size((100, 24)).columns, 100)
  preset = _preset(flag_values, argv)
  values = _preset_values(root, preset)
  rows = {row.flag: row for row in settings.SETTINGS}
  own = _own_flags(flag_values)
  name = os.path.basename(program)
  lines = [textwrap.dedent(doc or "").strip(), ""]
  if name.startswith("simclr-distill-"):
    lines += [f"(installed as {name}: the same as `python -m stages.{name[15:]}`)", ""]
  placed: set[str] = set()
  for title, keys in _SECTIONS:
    names = [n for n in own if n not in placed and _belongs(n, rows.get(n), keys)]
    if names:
      placed.update(names)
      lines.append(_section(title, names, flag_values, rows, root, values, preset, width))
  rest = [n for n in own if n not in placed]
  if rest:
    lines.append(_section("flags", rest, flag_values, rows, root, values, preset, width))
  general = [n for n in _GENERAL if n in flag_values]
  lines.append(_section("general", general, flag_values, rows, root, values, preset, width)
               + "  --flagfile=FILE\n      Read flags from FILE, one per line (repeatable).\n")
  choices = getattr(flag_values["preset"].parser, "enum_values", ()) if preset else ()
  if preset and preset not in choices:
    lines.append(f"--preset={preset} is not a preset: give one of {', '.join(choices)}.")
  elif preset:
    lines += textwrap.wrap(f"Values in [brackets] are --preset={preset}'s (--preset=NAME --help "
                           "shows another's); --print_config prints the whole resolved config.",
                           width)
  else:
    lines.append("Values in [brackets] are the defaults.")
  return "\n".join(lines).rstrip() + "\n"


def _preset(flag_values: flags.FlagValues, argv: list[str]) -> str | None:
  if "preset" not in flag_values:
    return None
  name = flag_values["preset"].default
  for i, word in enumerate(argv[1:], 1):
    if word.startswith("--preset="):
      name = word.partition("=")[2]
    elif word == "--preset" and i + 1 < len(argv):
      name = argv[i + 1]
  return name


def _preset_values(root: str | None, preset: str | None) -> dict[str, Any]:
  """Every field of the preset's config by dotted path ({} for a preset that does not exist:
  the command itself will say so)."""
  try:
    if root == "distill":
      cfg = config_lib.get_preset(preset)
    elif root == "study":
      cfg = study_config.get_preset(preset)
    elif root == "prepare":
      cfg = study_config.PrepareConfig()
    else:
      return {}
  except (KeyError, ValueError):
    return {}
  return dict(config_paths.flatten(cfg))


def _own_flags(flag_values: flags.FlagValues) -> list[str]:
  """The flags the stage modules defined (not absl's), in definition order."""
  names: list[str] = []
  for module, defined in flag_values.flags_by_module_dict().items():
    if module.startswith("stages.") or f"{os.sep}stages{os.sep}" in module:
      names += [f.name for f in defined if f.name not in names]
  return names


def _belongs(name: str, row, keys) -> bool:
  if row is not None:
    return row.group in keys
  return any(name == k or (k.endswith("*") and name.startswith(k[:-1])) for k in keys)


def _section(title, names, flag_values, rows, root, values, preset, width) -> str:
  out = [f"{title}:"]
  for name in names:
    flag = flag_values[name]
    row = rows.get(name)
    head = f"  --{'[no]' if flag.boolean else ''}{name}"
    shown = _shown_value(flag, row, root, values)
    if shown is not None:
      head += f" [{shown}]"
    out.append(head)
    out += textwrap.wrap(flag.help or "", width, initial_indent="      ",
                         subsequent_indent="      ")
  return "\n".join(out) + "\n"


def _shown_value(flag, row, root, values) -> str | None:
  """The preset's value for a setting, or the flag's own default; None when there is none."""
  if row is not None and root is not None and row.path is not None:
    path = row.path_on(root)
    if path in values:
      return _text(values[path])
    names = [v for p, v in values.items() if p.startswith(f"{path}[") and p.endswith("].name")]
    if names:  # A list of named dataclasses (the encoders): their names.
      return _text(",".join(map(str, names)))
    if any(p.startswith(f"{path}.") for p in values):  # A whole dataclass.
      return "from the preset"
  if flag.default is None:
    return None
  if isinstance(flag.default, (list, tuple)):
    return ",".join(map(str, flag.default))
  return _text(flag.default)


def _text(value: Any) -> str:
  text = config_paths.format_value(value)
  return text if len(text) <= 60 else text[:57] + "..."


def print_help(flag_values: flags.FlagValues, doc: str | None, root: str | None,
               argv: list[str]) -> None:
  """Prints `help_text` to stdout; a closed pipe (`--help | head`) is not an error."""
  try:
    sys.stdout.write(help_text(flag_values, doc, argv[0], root, argv))
    sys.stdout.flush()
  except BrokenPipeError:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
