"""What a run leaves in its workdir: JSON, JSON lines, tables and plots."""

from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np


def _jsonable(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist())
  if isinstance(value, (np.floating, float)):
    value = float(value)
    return value if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  return value


def write_json(path: os.PathLike, data: Any) -> None:
  """Writes ``data`` as indented JSON, atomically (temporary file, rename).

  Non-finite floats become ``null``, so the file is strict JSON.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(_jsonable(data), f, indent=2, allow_nan=False)
      f.write("\n")
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def read_json(path: os.PathLike) -> Any:
  with open(path) as f:
    return json.load(f)


class MetricsWriter:
  """Appends one JSON object a line to ``metrics.jsonl``, flushed each time."""

  def __init__(self, path: os.PathLike):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._file = open(self.path, "a")  # noqa: SIM115 - closed in close()

  def write(self, record: Mapping[str, Any]) -> None:
    self._file.write(json.dumps(_jsonable(record), allow_nan=False) + "\n")
    self._file.flush()

  def close(self) -> None:
    self._file.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def read_metrics(path: os.PathLike) -> list[dict[str, Any]]:
  """The records of a ``metrics.jsonl`` file."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def format_table(
  header: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 4
) -> str:
  """A Markdown table; floats are shown with ``digits`` decimals."""

  def cell(value: Any) -> str:
    if value is None:
      return "-"
    if isinstance(value, (float, np.floating)):
      return f"{value:.{digits}f}" if math.isfinite(value) else "nan"
    return str(value)

  body = [[cell(v) for v in row] for row in rows]
  widths = [
    max(len(str(h)), *(len(r[i]) for r in body)) if body else len(str(h))
    for i, h in enumerate(header)
  ]
  line = lambda cells: (
    "| "
    + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
    + " |"
  )
  rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
  return "\n".join([line([str(h) for h in header]), rule, *map(line, body)])


def plot_learning_curves(
  records: Sequence[Mapping[str, Any]],
  path: os.PathLike,
  title: str = "",
  series: Sequence[str] = ("train_rmse", "test_rmse"),
) -> None:
  """Saves a PNG of per-epoch metrics, one thin line per member, mean bold.

  Each record holds ``epoch`` and, for each series, a list of per-member
  values (or a single number).
  """
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4.5))
  epochs = [r["epoch"] for r in records]
  for index, name in enumerate(series):
    present = [r for r in records if r.get(name) is not None]
    if not present:
      continue
    values = np.array(
      [np.atleast_1d(np.asarray(r[name], float)) for r in present]
    )
    xs = [r["epoch"] for r in present]
    color = f"C{index}"
    if values.shape[1] > 1:
      ax.plot(xs, values, color=color, alpha=0.25, linewidth=0.8)
    ax.plot(
      xs, np.nanmean(values, axis=1), color=color, linewidth=2, label=name
    )
  ax.set_xlabel("epoch")
  ax.set_ylabel("RMSE")
  if epochs:
    ax.set_xlim(min(epochs), max(max(epochs), min(epochs) + 1))
  ax.grid(alpha=0.3)
  ax.legend()
  if title:
    ax.set_title(title)
  fig.tight_layout()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
  fig.savefig(tmp, dpi=120)
  plt.close(fig)
  os.replace(tmp, path)
