"""Source-level guarantees: nothing in the product can load a pickle."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PICKLING_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "shelve"}
PICKLE_LOADERS = {"read_pickle", "load_pickle"}
ARRAY_LOADERS = {"load"}  # np.load, jnp.load: pickles unless told not to


def product_files():
  for folder in ("aejax", "experiments", "benchmarks"):
    yield from sorted((ROOT / folder).rglob("*.py"))


def problems(path, root=ROOT):
  tree = ast.parse(path.read_text(), filename=str(path))
  for node in ast.walk(tree):
    where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
    if isinstance(node, ast.Import | ast.ImportFrom):
      names = [alias.name for alias in node.names]
      if isinstance(node, ast.ImportFrom) and node.module:
        names.append(node.module)
      for name in names:
        if name.split(".")[0] in PICKLING_MODULES:
          yield f"{where}: imports {name}"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
      owner = node.func.value
      owner_name = owner.id if isinstance(owner, ast.Name) else ""
      if node.func.attr in PICKLE_LOADERS:
        yield f"{where}: calls {node.func.attr}"
      if node.func.attr in ARRAY_LOADERS and owner_name in ("np", "jnp"):
        allowed = [k for k in node.keywords if k.arg == "allow_pickle"]
        if not (
          allowed
          and isinstance(allowed[0].value, ast.Constant)
          and allowed[0].value.value is False
        ):
          yield f"{where}: {owner_name}.load without allow_pickle=False"


def test_no_pickle_is_ever_loaded():
  files = list(product_files())
  assert len(files) > 10
  found = [problem for path in files for problem in problems(path)]
  assert found == []


def test_the_check_finds_what_it_looks_for(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text(
    "import pickle\nimport numpy as np\n"
    "np.load('x.npy')\nnp.load('y.npz', allow_pickle=True)\n"
    "np.load('z.npy', allow_pickle=False)\n"
  )
  assert list(problems(bad, root=tmp_path)) == [
    "bad.py:1: imports pickle",
    "bad.py:3: np.load without allow_pickle=False",
    "bad.py:4: np.load without allow_pickle=False",
  ]
