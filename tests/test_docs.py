"""The Python snippets of the README and docs/ use only names they define
(or Python's builtins): a reader who pastes one does not meet a NameError.
(The snippets are not run here: several train for minutes.)"""

import builtins
import pathlib
import re
import symtable

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def undefined_names(code: str) -> set[str]:
  """Names a snippet reads but never binds (at any scope)."""
  top = symtable.symtable(code, "<snippet>", "exec")
  bound, read = set(), set()

  def walk(table):
    for symbol in table.get_symbols():
      name = symbol.get_name()
      if (symbol.is_assigned() or symbol.is_imported()
          or symbol.is_parameter() or symbol.is_namespace()):
        bound.add(name)
      if symbol.is_referenced() and (symbol.is_global()
                                     or table is top):
        read.add(name)
    for child in table.get_children():
      walk(child)

  walk(top)
  return read - bound - set(dir(builtins))


def snippets():
  for path in DOCS:
    for i, code in enumerate(BLOCK.findall(path.read_text())):
      yield pytest.param(code, id=f"{path.name}-{i}")


@pytest.mark.parametrize("code", snippets())
def test_snippet_defines_what_it_uses(code):
  assert undefined_names(code) == set()


def test_the_check_finds_an_undefined_name():
  assert undefined_names("import jax\nx = jax.random.split(key, 8)\n") == {
      "key"}
  assert undefined_names("def f(a):\n  return a + b\n") == {"b"}
