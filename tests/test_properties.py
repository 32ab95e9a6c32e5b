"""Property tests: every parser, fed random and mutated files, gives a
result that holds its promises or raises the project's own error; nothing
else, no hang, and no partial cache."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import math
import os
import posixpath
import signal
import stat
import tarfile
import warnings
import zipfile
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aejax import report, resume, variants
from aejax.data import movielens, sources
from aejax.errors import DataError

PARSERS = settings(
  max_examples=120,
  deadline=None,
  suppress_health_check=[HealthCheck.too_slow],
)
ARCHIVES = settings(
  max_examples=40,
  deadline=None,
  suppress_health_check=[HealthCheck.too_slow],
)
_names = itertools.count()


@contextlib.contextmanager
def no_hang(seconds=20):
  """Fails the example with TimeoutError if it runs past ``seconds``."""

  def alarm(signum, frame):
    raise TimeoutError(f"no answer within {seconds} s")

  previous = signal.signal(signal.SIGALRM, alarm)
  signal.setitimer(signal.ITIMER_REAL, seconds)
  try:
    yield
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
  return tmp_path_factory.mktemp("properties")


def write(folder, data: bytes, name="file"):
  path = folder / f"{name}-{next(_names)}"
  path.write_bytes(data)
  return path


# --- building blocks of files ---------------------------------------------

ODD_NUMBERS = [
  "",
  " ",
  "+",
  "-",
  "+-1",
  "1_0",
  "0x1F",
  "1e3",
  "\u0663",
  "nan",
  "NaN",
  "-inf",
  "Infinity",
  "5.",
  ".5",
  "-0",
  "0" * 25 + "1",
  "9" * 30,
  "9" * 5000,
  "3\x00",
]
fields = st.one_of(
  st.integers(-(2**70), 2**70).map(str),
  st.floats(width=64).map(repr),
  st.sampled_from(ODD_NUMBERS),
  st.text(max_size=6),
)
line_ends = st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n", b""])


def valid_ratings(min_size=1):
  return st.lists(
    st.tuples(
      st.integers(1, 2**31 - 1),
      st.integers(1, 2**31 - 1),
      st.sampled_from([1, 2, 3, 4, 5, 0.5, 4.5, 3.25]),
      st.integers(0, 2**62),
    ),
    min_size=min_size,
    max_size=25,
    unique_by=lambda row: (row[0], row[1]),
  )


def render(rows, separator, ends):
  """Lines of ``rows`` joined by ``separator``, ending with ``ends``."""
  out = []
  for row, end in zip(rows, itertools.cycle(ends), strict=False):
    out.append(separator.join(str(f) for f in row).encode("latin-1") + end)
  return b"".join(out)


@st.composite
def mutations(draw, data: bytes) -> bytes:
  """``data`` with one to three damages a hand or a disk might do."""
  for _ in range(draw(st.integers(1, 3))):
    kind = draw(
      st.sampled_from(
        [
          "insert",
          "delete",
          "flip",
          "truncate",
          "duplicate_line",
          "header",
          "blank_line",
          "line_ends",
          "separator",
        ]
      )
    )
    at = draw(st.integers(0, len(data)))
    if kind == "insert":
      data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    elif kind == "delete":
      data = data[:at] + data[at + draw(st.integers(1, 8)) :]
    elif kind == "flip" and data:
      at = min(at, len(data) - 1)
      data = (
        data[:at]
        + bytes([data[at] ^ draw(st.integers(1, 255))])
        + (data[at + 1 :])
      )
    elif kind == "truncate":
      data = data[:at]
    elif kind == "duplicate_line":
      lines = data.splitlines(keepends=True)
      if lines:
        index = draw(st.integers(0, len(lines) - 1))
        lines.insert(index, lines[index])
      data = b"".join(lines)
    elif kind == "header":
      data = b"user_id\titem_id\trating\ttimestamp\n" + data
    elif kind == "blank_line":
      data = data[:at] + b"\n\n" + data[at:]
    elif kind == "line_ends":
      data = data.replace(b"\n", draw(line_ends))
    elif kind == "separator":
      old = draw(st.sampled_from([b"\t", b"::", b"|"]))
      new = draw(st.sampled_from([b",", b" ", b"\t\t", b":", b""]))
      data = data.replace(old, new, draw(st.integers(1, 3)))
  return data


@st.composite
def odd_field_files(draw, separator):
  """A valid file with some fields replaced by odd values."""
  rows = [list(row) for row in draw(valid_ratings())]
  for _ in range(draw(st.integers(1, 3))):
    row = draw(st.integers(0, len(rows) - 1))
    odd = st.one_of(st.sampled_from(ODD_NUMBERS), fields)
    rows[row][draw(st.integers(0, 3))] = draw(odd)
  lines = [separator.join(str(f) for f in row) for row in rows]
  return "\n".join(lines).encode("utf-8", "replace")


def rating_files(separator):
  random_lines = st.lists(
    st.tuples(st.lists(fields, max_size=6), line_ends), max_size=8
  ).map(
    lambda lines: b"".join(
      separator.join(f).encode("utf-8", "replace") + end for f, end in lines
    )
  )
  mutated = st.tuples(valid_ratings(), line_ends).flatmap(
    lambda pair: mutations(render(pair[0], separator, [pair[1] or b"\n"]))
  )
  return st.one_of(
    st.binary(max_size=300),
    random_lines,
    mutated,
    odd_field_files(separator),
    odd_field_files(separator),
  )


def assert_data_error(error, path, data):
  assert error.path == str(path)
  assert 0 <= error.line <= len(data.splitlines()) + 1
  assert "\n" not in str(error) and "\r" not in str(error)


# --- ratings ---------------------------------------------------------------


@pytest.mark.parametrize(
  ("separator", "encoding"), [("\t", "ascii"), ("::", "latin-1")]
)
@PARSERS
@given(data=st.data())
def test_rating_parser_returns_checked_ratings_or_data_error(
  scratch, separator, encoding, data
):
  content = data.draw(rating_files(separator))
  path = write(scratch, content)
  try:
    with no_hang():
      raw = movielens.parse_ratings(
        path, separator=separator, encoding=encoding
      )
  except DataError as error:
    assert_data_error(error, path, content)
    return
  # Every line became one rating, and each holds the promised ranges.
  assert len(raw) == len(content.splitlines()) > 0
  assert ((raw.user_ids >= 1) & (raw.user_ids <= 2**31 - 1)).all()
  assert ((raw.item_ids >= 1) & (raw.item_ids <= 2**31 - 1)).all()
  assert all(math.isfinite(v) and 0.5 <= v <= 5.0 for v in raw.values)
  assert ((raw.timestamps >= 0) & (raw.timestamps <= 2**62)).all()
  pairs = set(zip(raw.user_ids.tolist(), raw.item_ids.tolist(), strict=True))
  assert len(pairs) == len(raw)


@PARSERS
@given(
  rows=valid_ratings(),
  separator=st.sampled_from(["\t", "::"]),
  ends=st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=1),
  final_end=st.booleans(),
)
def test_valid_rating_files_parse_exactly(
  scratch, rows, separator, ends, final_end
):
  content = render(rows, separator, ends)
  if not final_end:
    content = content.rstrip(b"\r\n")
  raw = movielens.parse_ratings(write(scratch, content), separator=separator)
  assert raw.user_ids.tolist() == [r[0] for r in rows]
  assert raw.item_ids.tolist() == [r[1] for r in rows]
  assert raw.values.tolist() == [float(r[2]) for r in rows]
  assert raw.timestamps.tolist() == [r[3] for r in rows]


# --- titles ----------------------------------------------------------------

title_text = st.text(
  st.characters(codec="latin-1", exclude_characters="|:\t\r\n\x0b\x0c\x1c"),
  max_size=12,
)


@st.composite
def title_files(draw):
  ids = draw(st.lists(st.integers(1, 2**31 - 1), max_size=10, unique=True))
  titles = [draw(title_text) for _ in ids]
  style = draw(st.sampled_from(["u.item", "movies.dat", "pypi"]))
  if style == "pypi":
    lines = ["item_id:token\tmovie_title:token_seq\trelease_year:token"]
    lines += [f"{i}\t{t}\t1995" for i, t in zip(ids, titles, strict=True)]
    content = "\n".join(lines).encode("utf-8")
  else:
    separator = "|" if style == "u.item" else "::"
    lines = [
      f"{i}{separator}{t}{separator}x" for i, t in zip(ids, titles, strict=True)
    ]
    content = "\n".join(lines).encode("latin-1")
  return style, ids, titles, content


@PARSERS
@given(data=st.data())
def test_title_parser_returns_titles_or_data_error(scratch, data):
  content = data.draw(
    st.one_of(
      st.binary(max_size=300),
      title_files().flatmap(lambda made: mutations(made[3])),
    )
  )
  path = write(scratch, content)
  try:
    with no_hang():
      titles = movielens.parse_titles(path)
  except DataError as error:
    assert_data_error(error, path, content)
    return
  assert titles and all(1 <= i <= 2**31 - 1 for i in titles)
  assert all(isinstance(t, str) for t in titles.values())


@PARSERS
@given(made=title_files())
def test_valid_title_files_parse_exactly(scratch, made):
  style, ids, titles, content = made
  path = write(scratch, content)
  if not ids:
    with pytest.raises(DataError, match="no titles"):
      movielens.parse_titles(path)
    return
  year = " (1995)" if style == "pypi" else ""
  expected = {i: t + year for i, t in zip(ids, titles, strict=True)}
  assert movielens.parse_titles(path) == expected


# --- the files a workdir keeps -----------------------------------------------


def metrics_files():
  records = st.lists(
    st.fixed_dictionaries(
      {
        "epoch": st.integers(1, 5),
        "test_rmse": st.lists(st.floats(allow_infinity=False)),
      }
    ),
    max_size=6,
  )
  rendered = records.map(
    lambda rs: "".join(json.dumps(r) + "\n" for r in rs).encode()
  )
  return st.one_of(
    st.binary(max_size=200), rendered, rendered.flatmap(mutations)
  )


@PARSERS
@given(content=metrics_files(), epoch=st.integers(0, 4))
def test_metrics_reader_returns_records_or_data_error(scratch, content, epoch):
  path = write(scratch, content, "metrics.jsonl")
  try:
    with no_hang():
      records = report.read_metrics(path)
  except DataError as error:
    assert_data_error(error, path, content)
    return
  for record in records:
    assert isinstance(record, dict)
    assert isinstance(record["epoch"], int) and record["epoch"] >= 1
  try:
    with no_hang():
      kept = report.truncate_metrics(path, epoch)
  except DataError as error:
    assert_data_error(error, path, content)
    assert path.read_bytes() == content, "a refused cut changed the file"
    return
  assert [r["epoch"] for r in kept] == list(range(1, epoch + 1))
  assert report.read_metrics(path) == kept


@PARSERS
@given(data=st.data())
def test_saved_config_is_resumed_or_refused_with_our_errors(
  scratch, tmp_path_factory, data
):
  config = variants.get_config("plain", epochs=4)
  good = json.dumps(config.to_json(), indent=2).encode()
  content = data.draw(
    st.one_of(st.binary(max_size=200), mutations(good), st.just(good))
  )
  workdir = tmp_path_factory.mktemp("workdir", numbered=True)
  (workdir / "config.json").write_bytes(content)
  try:
    with no_hang():
      resume.check_config(workdir, config)
  except (DataError, resume.ResumeError) as error:
    assert "\n" not in str(error)
    return
  saved = json.loads(content)
  assert resume.config_differences(saved, config.to_json()) == []


# --- archives ----------------------------------------------------------------

RATINGS = b"1\t1\t5\t100\n1\t2\t3\t101\n2\t1\t4\t102\n"
TINY = sources.DatasetSpec(
  name="tiny",
  files=(
    sources.FileSpec("u.data", hashlib.sha256(RATINGS).hexdigest(), 3),
    sources.FileSpec("items.txt", None),
  ),
  sources=(),
)
MEMBERS = {"tiny/u.data": RATINGS, "tiny/u.item": b"1|A\n"}


SAFE_NAMES = ["tiny/u.data", "tiny/u.item", "tiny/README", "tiny/a/b"]
UNSAFE_NAMES = ["../u.data", "/tmp/u.data", "tiny/../../u.data", "C:\\u.data"]
TARGETS = ["u.item", "../tiny/u.item", "../../x", "/etc/passwd", "..", "a/.."]


def leaves_root(path):
  """Whether ``path``, taken from a folder ``/root``, ends outside it."""
  full = os.path.normpath(os.path.join("/root", path))
  return path.startswith("/") or not full.startswith("/root")


def hostile(name, kind, target, tar):
  """Whether this entry must make the whole archive refused."""
  if name in UNSAFE_NAMES:
    return True
  if kind == "hardlink" and tar:
    return leaves_root(target)  # a path from the archive's root
  if "link" in kind:
    return leaves_root(posixpath.join(posixpath.dirname(name), target))
  return False


@st.composite
def archives(draw):
  """A zip or tar archive of random entries: files, folders and links with
  safe or hostile names and targets. Returns its bytes and whether an
  entry is hostile."""
  entries = [("tiny/u.data", "file", RATINGS), ("tiny/u.item", "file", b"x")]
  for _ in range(draw(st.integers(0, 4))):
    name = draw(st.sampled_from(SAFE_NAMES + UNSAFE_NAMES))
    kind = draw(st.sampled_from(["file", "dir", "symlink", "hardlink"]))
    if "link" in kind:
      payload = draw(st.sampled_from(TARGETS))
    else:
      payload = draw(st.one_of(st.just(RATINGS), st.binary(max_size=40)))
    entries.insert(draw(st.integers(0, len(entries))), (name, kind, payload))
  tar = draw(st.booleans())
  bad = any(hostile(*entry, tar=tar) for entry in entries)
  buffer = io.BytesIO()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # zipfile warns of repeated names
    if tar:
      _write_tar(buffer, entries)
    else:
      compression = draw(
        st.sampled_from(
          [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA]
        )
      )
      _write_zip(buffer, entries, compression)
  return buffer.getvalue(), bad


def _write_zip(buffer, entries, compression):
  with zipfile.ZipFile(buffer, "w", compression) as archive:
    for name, kind, payload in entries:
      if kind == "dir":
        archive.writestr(name + "/", b"")
        continue
      info = zipfile.ZipInfo(name)
      if "link" in kind:  # zip knows only symbolic links
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        payload = payload.encode()
      archive.writestr(info, payload)


def _write_tar(buffer, entries):
  kinds = {
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
  }
  with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
    for name, kind, payload in entries:
      info = tarfile.TarInfo(name)
      if kind == "file":
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
        continue
      info.type = kinds[kind]
      if "link" in kind:
        info.linkname = payload
      archive.addfile(info)


@ARCHIVES
@given(data=st.data())
def test_damaged_archives_give_verified_files_or_fetch_error(
  tmp_path_factory, data
):
  base, bad = data.draw(archives())
  content = data.draw(
    st.one_of(st.just(base), mutations(base), st.binary(max_size=400))
  )
  folder = tmp_path_factory.mktemp("fetch", numbered=True)
  archive = folder / "tiny.archive"
  archive.write_bytes(content)
  source = sources.ArchiveSource(
    label="local damaged archive",
    url=archive.as_uri(),
    # The archive's own digest passes, so the reader meets the damage.
    digest="sha256:" + hashlib.sha256(content).hexdigest(),
    members=(
      sources.Member("u.data", "tiny/u.data"),
      sources.Member("items.txt", "tiny/u.item"),
    ),
  )
  cache = folder / "cache"
  with mock.patch.dict(sources.DATASETS, {"tiny": TINY}), no_hang():
    try:
      sources.fetch("tiny", cache, sources=(source,))
    except sources.FetchError as error:
      assert "local damaged archive" in str(error)
      assert not any((cache / "tiny").iterdir())
    else:
      assert content != base or not bad, "a hostile archive was read"
      assert (cache / "tiny" / "u.data").read_bytes() == RATINGS
      assert sorted(p.name for p in (cache / "tiny").iterdir()) == [
        "items.txt",
        "u.data",
      ]
  assert sorted(p.name for p in folder.iterdir()) == ["cache", "tiny.archive"]
