"""The floors of docs/architecture.md, read from the code with ``ast``.

1 primitives (top-level modules), 2 ``envs/``, ``networks``, ``heads``,
3 the pure learners ``agents/`` and ``rlhf/``, 4 ``host/``. A module imports
only its own floor or lower ones; ``agents/`` and ``rlhf/`` never import each
other; no import cycles; floors 1-3 do no I/O (no ``open``/``print``, no
host libraries); floor 1 depends on nothing but JAX's own libraries and
NumPy; no function has more than 60 lines of code (its docstring, blank
lines and comments not counted: a long function is split by concept, not
squeezed), and, as a smell only, no module is over 600 lines. The last
test shows the checks catch each kind of violation.
"""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "jaxrl_align"
HOST_LIBS = {"argparse", "tqdm", "matplotlib", "orbax", "tensorboardX",
             "signal", "shutil", "imageio", "PIL", "gymnasium.wrappers"}
FLOOR_1_LIBS = {"jax", "jaxlib", "chex", "optax", "numpy", "flax"}
MAX_FUNCTION_LINES = 60  # of code
MAX_LINES = 600  # a smell: a module this long holds more than one concept


def floor(module: str) -> int:
  parts = module.split(".")[1:]
  if not parts or parts[0] == "__main__":
    return 1 if not parts else 4
  head = parts[0]
  if head == "host":
    return 4
  if head in ("agents", "rlhf", "primer"):
    return 3
  if head in ("envs", "networks", "heads"):
    return 2
  return 1


def modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
  out = {}
  for path in root.rglob("*.py"):
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts.pop()
    out[".".join(parts)] = path
  return out


def imports(name: str, path: pathlib.Path, known) -> tuple[set, set, set]:
  """``(internal modules, third-party roots, I/O uses)`` of one module."""
  tree = ast.parse(path.read_text())
  package = name.split(".") if path.name == "__init__.py" else name.split(
      ".")[:-1]
  internal, external, io = set(), set(), set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and (
        node.func.id in ("open", "print")):
      io.add(node.func.id)
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package[:len(package) - node.level + 1]
                        + ([base] if base else []))
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                 for a in node.names]
    else:
      continue
    for target in targets:
      if target.split(".")[0] != "jaxrl_align":
        external.add(target.split(".")[0])
        if target in HOST_LIBS or target.split(".")[0] in HOST_LIBS:
          io.add(target)
        continue
      while target not in known and "." in target:
        target = target.rsplit(".", 1)[0]
      if target != name and target != "jaxrl_align":
        internal.add(target)
  return internal, external, io


def code_lines(node: ast.AST, lines: list[str]) -> int:
  """Lines of code of a function: its body less a docstring, blank lines
  and comment lines (nested functions count in their parent too)."""
  body = node.body
  first = body[0]
  if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
      and isinstance(first.value.value, str)):
    if len(body) == 1:
      return 0
    first = body[1]
  text = lines[first.lineno - 1:node.end_lineno]
  return sum(1 for t in text if t.strip() and not t.strip().startswith("#"))


def long_functions(path: pathlib.Path) -> list[tuple[str, int]]:
  source = path.read_text()
  lines = source.splitlines()
  return [(node.name, code_lines(node, lines))
          for node in ast.walk(ast.parse(source))
          if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
          and code_lines(node, lines) > MAX_FUNCTION_LINES]


def violations(root: pathlib.Path) -> list[str]:
  mods = modules(root)
  graph, problems = {}, []
  for name, path in mods.items():
    internal, external, io = imports(name, path, mods)
    graph[name] = internal
    for target in internal:
      if floor(target) > floor(name):
        problems.append(f"upward: {name} (floor {floor(name)}) imports "
                        f"{target} (floor {floor(target)})")
      pair = {(name.split(".") + [""])[1], (target.split(".") + [""])[1]}
      if pair == {"agents", "rlhf"}:
        problems.append(f"sideways: {name} imports {target}")
    if floor(name) < 4 and io:
      problems.append(f"I/O below the host floor: {name} uses "
                      f"{', '.join(sorted(io))}")
    foreign = external - FLOOR_1_LIBS - set(sys.stdlib_module_names)
    if floor(name) == 1 and foreign:
      problems.append(f"floor 1 {name} depends on {sorted(foreign)}")
    lines = len(path.read_text().splitlines())
    if lines > MAX_LINES:
      problems.append(f"{name} has {lines} lines (> {MAX_LINES})")
    for function, count in long_functions(path):
      problems.append(f"{name}.{function} has {count} lines of code "
                      f"(> {MAX_FUNCTION_LINES})")
  # Cycles: depth-first search for a back edge.
  state: dict[str, int] = {}

  def visit(node, trail):
    state[node] = 1
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        problems.append("cycle: " + " -> ".join(trail[trail.index(nxt):]
                                                 + [nxt]))
      elif nxt not in state:
        visit(nxt, trail + [nxt])
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])
  return problems


def test_the_package_keeps_its_floors():
  assert violations(PACKAGE) == []


def test_every_floor_is_populated_as_documented():
  floors = {floor(m) for m in modules(PACKAGE)}
  assert floors == {1, 2, 3, 4}
  assert floor("jaxrl_align.sgd") == 1 and floor("jaxrl_align.heads") == 2
  assert floor("jaxrl_align.rlhf.sft") == 3
  assert floor("jaxrl_align.host.runner") == 4


@pytest.mark.parametrize("files, expected", [
    ({"advantages.py": "from jaxrl_align.agents import ppo\n",
      "agents/__init__.py": "", "agents/ppo.py": ""}, "upward"),
    ({"agents/__init__.py": "", "agents/ppo.py": "",
      "rlhf/__init__.py": "", "rlhf/sft.py": "from jaxrl_align.agents import ppo\n"},
     "sideways"),
    ({"a.py": "from jaxrl_align import b\n", "b.py": "from jaxrl_align import a\n"},
     "cycle"),
    ({"losses.py": "print('hi')\n"}, "I/O below"),
    ({"rlhf/__init__.py": "", "rlhf/corpus.py": "import shutil\n"}, "I/O below"),
    ({"losses.py": "import torch\n"}, "depends on"),
    ({"losses.py": "x = 1\n" * (MAX_LINES + 1)}, "lines"),
    ({"losses.py": 'def f():\n  """A docstring."""\n  # why\n\n'
                   + "  x = 1\n" * (MAX_FUNCTION_LINES + 1)},
     "lines of code"),
])
def test_the_check_catches_each_violation(tmp_path, files, expected):
  root = tmp_path / "jaxrl_align"
  for rel, text in {"__init__.py": "", **files}.items():
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)
  found = violations(root)
  assert any(expected in v for v in found), found


def _public_classes(root: pathlib.Path) -> dict[str, list[str]]:
  found: dict[str, list[str]] = {}
  for path in sorted(root.rglob("*.py")):
    for node in ast.parse(path.read_text()).body:
      if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
        found.setdefault(node.name, []).append(
            str(path.relative_to(root.parent)))
  return found


def test_no_two_public_classes_share_a_name(tmp_path):
  """One name, one thing: two ``PPOConfig``s (the classic-control learner's
  and the language model's) collided; the language model's are
  ``RLHFPPOConfig`` and ``RLHFTRPOConfig`` (the old names still resolve,
  with a warning). A package with the old collision fails the check."""
  twice = {k: v for k, v in _public_classes(PACKAGE).items() if len(v) > 1}
  assert not twice, twice
  for name in ("a", "b"):
    (tmp_path / "pkg" / name).mkdir(parents=True)
    (tmp_path / "pkg" / name / "ppo.py").write_text("class PPOConfig: ...\n")
  assert len(_public_classes(tmp_path / "pkg")["PPOConfig"]) == 2


@pytest.mark.parametrize("module, old, new", [
    ("ppo", "PPOConfig", "RLHFPPOConfig"), ("ppo", "update", "learn"),
    ("trpo", "TRPOConfig", "RLHFTRPOConfig"), ("trpo", "update", "learn")])
def test_renamed_names_still_resolve_with_a_warning(module, old, new):
  import importlib

  mod = importlib.import_module(f"jaxrl_align.rlhf.{module}")
  with pytest.warns(DeprecationWarning, match=f"{old} is now {new}"):
    assert getattr(mod, old) is getattr(mod, new)
  with pytest.raises(AttributeError):
    getattr(mod, "no_such_name")
