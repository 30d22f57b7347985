"""The layout ARCHITECTURE.md describes, held against the code: every module sits in a layer,
no module imports a higher layer when it runs, stage entry points reach the library through
their own step, and the map names every module."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "simclr_distill"

# ARCHITECTURE.md's layers, lowest first: simclr_distill.<name> -> layer.
LAYERS = {
    1: "config study_config settings config_paths registry fileio results metrics scoring stats "
       "preemption _version",
    2: "data",
    3: "models augment losses contrastive simclr teacher_net teachers inference labelling "
       "selection checkpointing keras_compat provenance probe reference matrix dashboard",
    4: "training",
    5: "steps cluster",
}
LAYER = {name: layer for layer, names in LAYERS.items() for name in names.split()}


def _modules() -> list[tuple[str, pathlib.Path]]:
  out = []
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(ROOT).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out.append((name, path))
  return out


_MODULE_NAMES = {name for name, _ in _modules()}


def _runtime_imports(path: pathlib.Path) -> list[tuple[str, int]]:
  """The simclr_distill modules `path` imports when it runs (imports under
  `if TYPE_CHECKING:` are annotations only and left out), with their lines."""
  tree = ast.parse(path.read_text())
  skipped = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
      skipped.update(id(n) for child in node.body for n in ast.walk(child))
  out = []
  for node in ast.walk(tree):
    if id(node) in skipped:
      continue
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("simclr_distill"):
      # `from package import module` imports that module; `from module import name`, the module.
      out += [(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in _MODULE_NAMES
               else node.module, node.lineno) for a in node.names]
    elif isinstance(node, ast.Import):
      out += [(a.name, node.lineno) for a in node.names if a.name.startswith("simclr_distill.")]
  return out


def _layer(module: str) -> int | None:
  parts = module.split(".")
  return LAYER.get(parts[1]) if len(parts) > 1 and parts[0] == "simclr_distill" else None


def test_every_module_has_a_layer():
  unplaced = [name for name, _ in _modules() if name != "simclr_distill" and _layer(name) is None]
  assert not unplaced, f"place these modules in a layer (here and in ARCHITECTURE.md): {unplaced}"


def test_no_module_imports_a_higher_layer():
  upward = []
  for name, path in _modules():
    mine = _layer(name)
    for target, line in _runtime_imports(path):
      theirs = _layer(target)
      if mine is not None and theirs is not None and theirs > mine:
        upward.append(f"{path.relative_to(ROOT)}:{line} (layer {mine}) imports {target} "
                      f"(layer {theirs})")
  assert not upward, "\n".join(upward)


def test_the_imports_between_modules_have_no_cycle():
  graph = {name: {t for t, _ in _runtime_imports(path)} for name, path in _modules()}

  def resolve(target: str) -> str | None:  # "simclr_distill.data" of "from ... import x".
    while target and target not in graph:
      target = target.rpartition(".")[0]
    return target or None

  edges = {n: {r for t in ts if (r := resolve(t)) and r != n and r != "simclr_distill"}
           for n, ts in graph.items()}
  state: dict[str, int] = {}

  def visit(node: str, trail: list[str]) -> None:
    state[node] = 1
    for nxt in sorted(edges[node]):
      if state.get(nxt) == 1:
        pytest.fail("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
      if nxt not in state:
        visit(nxt, trail + [nxt])
    state[node] = 2

  for node in sorted(edges):
    if node not in state:
      visit(node, [node])


@pytest.mark.parametrize("stage", sorted(p.stem for p in (ROOT / "stages").glob("*.py")
                                         if p.stem not in ("__init__", "common", "usage")))
def test_a_stage_reaches_the_library_through_its_own_step(stage):
  """One hop: stages/<name>.py calls simclr_distill.steps.<name>, and no other step or
  training module (settings and results tables are fine)."""
  imports = {t for t, _ in _runtime_imports(ROOT / "stages" / f"{stage}.py")}
  steps = {t for t in imports if t.startswith("simclr_distill.steps")}
  assert steps == {"simclr_distill.steps"} or steps == {f"simclr_distill.steps.{stage}"}, steps
  source = (ROOT / "stages" / f"{stage}.py").read_text()
  assert f"from simclr_distill.steps import {stage}" in source
  assert not {t for t in imports if t.startswith("simclr_distill.training")}


def test_the_map_names_every_module():
  text = (ROOT / "ARCHITECTURE.md").read_text()
  missing = [path.relative_to(PACKAGE).as_posix() for _, path in _modules()
             if path.name != "__init__.py" and path.stem not in text]
  assert not missing, f"ARCHITECTURE.md does not name: {missing}"
