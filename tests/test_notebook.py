"""The Colab notebook's code, run on CPU with tiny settings and no network."""

from __future__ import annotations

import json
import math
import pathlib

import matplotlib
import matplotlib.pyplot as plt
import pytest

NOTEBOOK = (
  pathlib.Path(__file__).resolve().parents[1] / "experiments/colab_tpu.ipynb"
)


def code_cells(notebook: dict) -> list[tuple[list[str], str]]:
  return [
    (cell["metadata"].get("tags", []), "".join(cell["source"]))
    for cell in notebook["cells"]
    if cell["cell_type"] == "code"
  ]


def test_notebook_installs_from_the_repository_variable():
  notebook = json.loads(NOTEBOOK.read_text())
  cells = code_cells(notebook)
  assert cells[0][0] == ["parameters"]
  assert "AEJAX_REPO = " in cells[0][1]
  install = [source for tags, source in cells if "install" in tags]
  assert len(install) == 1
  assert 'f"aejax @ git+{AEJAX_REPO}@{AEJAX_REF}"' in install[0]
  # Nothing else installs anything or names a host.
  for tags, source in cells:
    if "install" not in tags and "parameters" not in tags:
      assert "pip" not in source and "://" not in source
  assert all(not cell.get("outputs") for cell in notebook["cells"])


def test_notebook_runs_on_cpu_with_tiny_settings(
  tiny_split, tmp_path, monkeypatch
):
  matplotlib.use("Agg")
  shown = []
  monkeypatch.setattr(
    plt, "show", lambda: (shown.append(plt.gcf()), plt.close("all"))
  )
  namespace: dict = {}
  for tags, source in code_cells(json.loads(NOTEBOOK.read_text())):
    if "install" in tags:
      continue
    exec(compile(source, str(NOTEBOOK), "exec"), namespace)
    if "parameters" in tags:
      namespace.update(
        EPOCHS=2,
        DATA_DIR=str(tiny_split),
        WORKDIR=str(tmp_path / "runs"),
        SWEEP_K=(2, 4),
        SEEDS=1,
      )

  main = namespace["main_results"]
  assert main["variant"] == "ksparse" and main["epochs"] == 2
  assert math.isfinite(main["test_rmse"])
  sweep = namespace["sweep_results"]
  assert sweep["n_members"] == 2
  assert [m["k"] for m in sweep["members"]] == [2.0, 4.0]
  assert all(math.isfinite(m["test_rmse"]) for m in sweep["members"])
  # k is for the validation ratings to choose, and the plot shows them.
  assert all(math.isfinite(m["valid_rmse"]) for m in sweep["members"])
  assert sweep["valid_ratings"] > 0
  for name in ("ksparse", "ksparse-sweep"):
    assert (tmp_path / "runs" / name / "learning_curves.png").is_file()
  # The main job's curves, the sweep plot and the sweep's curves.
  assert len(shown) == 3


def test_notebook_refuses_the_placeholder_repository():
  cells = code_cells(json.loads(NOTEBOOK.read_text()))
  namespace: dict = {}
  exec(cells[0][1], namespace)
  install = next(source for tags, source in cells if "install" in tags)
  with pytest.raises(ValueError, match="Set AEJAX_REPO"):
    exec(install, namespace)
