"""What a run leaves in its workdir: JSON, JSON lines, tables and plots."""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any

import numpy as np
from absl import logging

from aejax.errors import DataError


def jsonable(value: Any) -> Any:
  """``value`` with numpy arrays and scalars turned into lists and numbers.

  Non-finite floats become None, so that the result is strict JSON.

  Args:
    value: a number, array, mapping or sequence of them, nested freely;
      mapping keys become strings.

  Returns:
    The same structure built from dicts, lists, Python numbers and None.
  """
  if isinstance(value, Mapping):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return jsonable(value.tolist())
  if isinstance(value, (np.floating, float)):
    value = float(value)
    return value if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  return value


def write_json(path: os.PathLike, data: Any) -> None:
  """Writes ``data`` as indented JSON, atomically (temporary file, rename).

  Non-finite floats become ``null``, so the file is strict JSON.

  Args:
    path: the file to write; its folder is made if missing.
    data: anything ``jsonable`` accepts.
  """
  text = json.dumps(jsonable(data), indent=2, allow_nan=False)
  _write_text(pathlib.Path(path), text + "\n")


def read_json(path: os.PathLike) -> Any:
  """The content of a JSON file.

  Args:
    path: the file to read.

  Returns:
    The decoded JSON value.

  Raises:
    DataError: the file cannot be read or is not JSON; the line is named.
  """
  data = _read_bytes(path)
  try:
    return json.loads(data.decode("utf-8"))
  except UnicodeDecodeError:
    raise DataError(path, 0, "not UTF-8 text") from None
  except json.JSONDecodeError as error:
    raise DataError(path, error.lineno, f"not JSON: {error.msg}") from None
  except (ValueError, RecursionError) as error:
    raise DataError(path, 0, f"not JSON: {type(error).__name__}") from None


def _read_bytes(path: os.PathLike) -> bytes:
  try:
    return pathlib.Path(path).read_bytes()
  except OSError as error:
    reason = error.strerror or type(error).__name__
    raise DataError(path, 0, f"cannot read: {reason}") from None


class MetricsWriter:
  """Appends one JSON object a line to ``metrics.jsonl``, flushed each time."""

  def __init__(self, path: os.PathLike):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._file = open(self.path, "a")  # noqa: SIM115 - closed in close()

  def write(self, record: Mapping[str, Any]) -> None:
    """Appends ``record`` as one line of strict JSON and flushes the file.

    Args:
      record: the line's fields; arrays and non-finite floats are made
        JSON first (``jsonable``).
    """
    self._file.write(json.dumps(jsonable(record), allow_nan=False) + "\n")
    self._file.flush()

  def close(self) -> None:
    """Closes the file; later writes raise ``ValueError``."""
    self._file.close()

  def __enter__(self) -> MetricsWriter:
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()


def read_metrics(path: os.PathLike) -> list[dict[str, Any]]:
  """The records of a ``metrics.jsonl`` file, in file order.

  A last line without its line end that is not a whole record is a write
  cut short by a killed process, and is left out. Blank lines are skipped.

  Args:
    path: the ``metrics.jsonl`` file.

  Returns:
    One dict per record.

  Raises:
    DataError: a complete line that is not a JSON object with an integer
      ``epoch`` of at least 1; the line is named.
  """
  lines = _read_bytes(path).split(b"\n")
  last = lines.pop()  # empty when the file ends with a line end
  records = [
    _decode_record(path, number, line)
    for number, line in enumerate(lines, 1)
    if line.strip()
  ]
  if last.strip():
    with contextlib.suppress(DataError):
      records.append(_decode_record(path, len(lines) + 1, last))
  return records


def _decode_record(path, number: int, line: bytes) -> dict[str, Any]:
  try:
    record = json.loads(line.decode("utf-8"))
  except UnicodeDecodeError:
    raise DataError(path, number, "not UTF-8 text") from None
  except (ValueError, RecursionError):
    raise DataError(path, number, "not a JSON record") from None
  epoch = record.get("epoch") if isinstance(record, dict) else None
  if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
    raise DataError(path, number, "not a record with an epoch of at least 1")
  return record


def truncate_metrics(
  path: os.PathLike, epoch: int, *, rewrite: bool = True
) -> list[dict[str, Any]]:
  """Cuts ``metrics.jsonl`` back to epochs ``1 .. epoch``; returns them.

  The file is rewritten atomically (a missing file becomes an empty one),
  so that records written after the checkpoint of ``epoch`` are dropped
  before a resumed run appends its own. With ``rewrite=False`` the records
  are only read and checked, as by the processes of a run that do not
  write its files.

  Args:
    path: the ``metrics.jsonl`` file.
    epoch: the last epoch to keep (the epoch of the checkpoint resumed).
    rewrite: whether to write the kept records back.

  Returns:
    The records of epochs ``1 .. epoch``, made strict JSON (``jsonable``).

  Raises:
    DataError: the file cannot be read (see ``read_metrics``), or its
      records up to ``epoch`` are not exactly epochs ``1 .. epoch``.
  """
  path = pathlib.Path(path)
  records = read_metrics(path) if path.exists() else []
  kept = [r for r in records if r["epoch"] <= epoch]
  if len(kept) < len(records):
    logging.warning(
      "Dropping %d records of %s past epoch %d, the last checkpoint",
      len(records) - len(kept),
      path,
      epoch,
    )
  epochs = [r["epoch"] for r in kept]
  if epochs != list(range(1, epoch + 1)):
    shown = ", ".join(map(str, epochs[:8])) + (
      " ..." if len(epochs) > 8 else ""
    )
    raise DataError(
      path, 0, f"holds epochs [{shown}], expected 1 to {epoch} in order"
    )
  kept = [jsonable(r) for r in kept]  # strict JSON: NaN becomes null
  if rewrite:
    _write_text(
      path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept)
    )
  return kept


def write_atomic(
  path: os.PathLike, write: Callable[[IO[bytes]], None]
) -> pathlib.Path:
  """Writes ``path`` through ``write(file)`` so that it is whole or absent.

  The bytes go to a hidden file beside ``path``, which then replaces it in
  one rename: a reader or a killed process never sees half a file. The
  result is readable by all (0644), as the files of a run are.

  Args:
    path: the file to write; its folder is created if missing.
    write: writes the content to the binary file it is given.

  Returns:
    ``path``.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  try:
    os.fchmod(fd, 0o644)
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise
  return path


def _write_text(path: pathlib.Path, text: str) -> None:
  write_atomic(path, lambda f: f.write(text.encode()))


def sample_std(values: Sequence[float]) -> float:
  """Standard deviation with Bessel's correction; 0 for a single value.

  ``s = sqrt(sum_i (x_i - mean)^2 / (n - 1))``.

  Args:
    values: the sample, at least one value.

  Returns:
    ``s`` as a float, or 0.0 when ``n = 1``.
  """
  values = np.asarray(values, np.float64)
  return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def format_table(
  header: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 4
) -> str:
  """A Markdown table; floats are shown with ``digits`` decimals.

  None shows as ``-`` and a non-finite float as ``nan``; columns are padded
  to their widest cell.

  Args:
    header: the column names.
    rows: the cells of each row, as many as ``header``.
    digits: decimals of a float.

  Returns:
    The table's lines joined by line ends, without a final one.
  """

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


def _save_figure(fig, path: os.PathLike) -> None:
  """Writes a matplotlib figure to ``path`` atomically and closes it."""
  from matplotlib import pyplot as plt

  fig.tight_layout()
  try:
    fmt = pathlib.Path(path).suffix.lstrip(".") or "png"
    write_atomic(path, lambda f: fig.savefig(f, dpi=120, format=fmt))
  finally:
    plt.close(fig)


def plot_learning_curves(
  records: Sequence[Mapping[str, Any]],
  path: os.PathLike,
  title: str = "",
  series: Sequence[str] = ("train_rmse", "valid_rmse"),
) -> None:
  """Saves a PNG of per-epoch metrics, one thin line per member, mean bold.

  Each record holds ``epoch`` and, for each series, a list of per-member
  values (or a single number).

  Args:
    records: the run's ``metrics.jsonl`` records.
    path: the PNG to write, atomically.
    title: the plot's title, if any.
    series: the record fields to draw; a field no record holds is skipped.
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
  _save_figure(fig, path)


COMPARED = ("test_rmse", "test_mae", "test_course_rmse")


def comparison_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """One row per variant and swept setting, with mean and std over seeds.

  Args:
    runs: the ``results.json`` contents of each variant's run.

  Returns:
    Rows with ``variant``, ``setting`` (the swept values, or ``-``),
    ``seeds``, ``<metric>_mean`` and ``<metric>_std`` for each of
    ``COMPARED``, ``epochs`` and ``seconds`` (the whole run's, shared by its
    settings since they train together).
  """
  rows = []
  for run in runs:
    swept = list(run.get("swept", []))
    groups: dict[tuple, list] = {}
    for member in run["members"]:
      groups.setdefault(tuple(member[name] for name in swept), []).append(
        member
      )
    for key, members in groups.items():
      setting = ", ".join(f"{n}={v:g}" for n, v in zip(swept, key, strict=True))
      row: dict[str, Any] = {
        "variant": run["variant"],
        "setting": setting or "-",
        "seeds": len(members),
      }
      for metric in COMPARED:
        values = [m[metric] for m in members]
        row[f"{metric}_mean"] = float(np.mean(values))
        row[f"{metric}_std"] = sample_std(values)
      row["epochs"] = run["epochs"]
      row["seconds"] = run["seconds"]
      rows.append(row)
  return rows


def comparison_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """The comparison as a Markdown table, ``mean ± std`` per metric.

  Args:
    rows: from ``comparison_rows``.

  Returns:
    The table (``format_table``).
  """
  header = ["variant", "setting", "seeds", "test RMSE", "test MAE",
            "test course RMSE", "epochs", "seconds"]  # fmt: skip
  body = []
  for row in rows:
    cells = [row["variant"], row["setting"], row["seeds"]]
    for metric in COMPARED:
      mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
      cells.append(f"{mean:.4f} ± {std:.4f}")
    cells += [row["epochs"], f"{row['seconds']:.1f}"]
    body.append(cells)
  return format_table(header, body)


def plot_comparison(
  rows: Sequence[Mapping[str, Any]],
  curves: Mapping[str, Sequence[Mapping[str, Any]]],
  path: os.PathLike,
) -> None:
  """Saves a PNG of test RMSE per variant and each variant's learning curve.

  The left panel shows each row's mean test RMSE with its std over seeds
  as an error bar; the right one each variant's mean validation RMSE per
  epoch (training RMSE for a run without validation ratings, since the test
  split is scored only once).

  Args:
    rows: from ``comparison_rows``.
    curves: each variant's ``metrics.jsonl`` records.
    path: the PNG to write.
  """
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  fig, (bars, lines) = plt.subplots(1, 2, figsize=(12, 4.5))
  labels = [
    row["variant"] if row["setting"] == "-"
    else f"{row['variant']}\n{row['setting']}"
    for row in rows
  ]  # fmt: skip
  means = [row["test_rmse_mean"] for row in rows]
  stds = [row["test_rmse_std"] for row in rows]
  positions = np.arange(len(rows))
  bars.bar(positions, means, yerr=stds, capsize=4, color="C0", alpha=0.8)
  bars.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
  if means:
    low = min(m - s for m, s in zip(means, stds, strict=True))
    high = max(m + s for m, s in zip(means, stds, strict=True))
    margin = max(0.02, 0.1 * (high - low))
    bars.set_ylim(low - margin, high + margin)
  bars.set_ylabel("test RMSE (mean ± std over seeds)")
  bars.grid(axis="y", alpha=0.3)

  for index, (variant, records) in enumerate(curves.items()):
    series = "valid_rmse" if records and "valid_rmse" in records[0] else None
    series = series or "train_rmse"
    xs = [r["epoch"] for r in records]
    ys = [float(np.nanmean(np.asarray(r[series], float))) for r in records]
    label = variant if series == "valid_rmse" else f"{variant} (train)"
    lines.plot(xs, ys, color=f"C{index % 10}", label=label)
  lines.set_xlabel("epoch")
  lines.set_ylabel("validation RMSE (mean over members)")
  lines.grid(alpha=0.3)
  if curves:
    lines.legend(fontsize=8)
  _save_figure(fig, path)


def write_comparison(
  workdir: os.PathLike,
  runs: Sequence[Mapping[str, Any]],
  curves: Mapping[str, Sequence[Mapping[str, Any]]],
) -> str:
  """Writes ``comparison.md``, ``comparison.json`` and ``comparison.png``.

  Args:
    workdir: the folder of the comparison.
    runs: the ``results.json`` contents of each variant's run.
    curves: each variant's ``metrics.jsonl`` records.

  Returns:
    The Markdown table.
  """
  workdir = pathlib.Path(workdir)
  rows = comparison_rows(runs)
  table = comparison_table(rows)
  first = runs[0] if runs else {}
  title = (
    f"# Variants on {first.get('dataset', '?')} {first.get('split', '?')}\n\n"
  )
  _write_text(workdir / "comparison.md", title + table + "\n")
  write_json(workdir / "comparison.json", {"rows": rows})
  plot_comparison(rows, curves, workdir / "comparison.png")
  return table
