"""Fetching, verifying and caching data files safely."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from aejax.data import sources

RATINGS = b"1\t1\t5\t100\n1\t2\t3\t101\n2\t1\t4\t102\n"


def make_zip(path, members):
  with zipfile.ZipFile(path, "w") as archive:
    for name, data in members.items():
      archive.writestr(name, data)
  return path


def digest(path, algo="sha256"):
  return f"{algo}:" + hashlib.new(algo, path.read_bytes()).hexdigest()


@pytest.fixture
def tiny_dataset(monkeypatch):
  spec = sources.DatasetSpec(
    name="tiny",
    files=(
      sources.FileSpec("u.data", hashlib.sha256(RATINGS).hexdigest(), 3),
      sources.FileSpec("items.txt", None),
    ),
    sources=(),
  )
  monkeypatch.setitem(sources.DATASETS, "tiny", spec)
  return spec


def zip_source(path, digest_text, **overrides):
  fields = dict(
    label=f"local {path.name}",
    url=path.as_uri(),
    digest=digest_text,
    members=(
      sources.Member("u.data", "tiny/u.data"),
      sources.Member("items.txt", "tiny/u.item"),
    ),
  )
  fields.update(overrides)
  return sources.ArchiveSource(**fields)


def test_fetch_normalises_verifies_and_caches(tmp_path, tiny_dataset):
  archive = make_zip(
    tmp_path / "tiny.zip",
    {"tiny/u.data": RATINGS.replace(b"\n", b"\r\n"), "tiny/u.item": b"1|A\n"},
  )
  cache = tmp_path / "cache"
  source = zip_source(archive, digest(archive, "md5"))
  folder = sources.fetch("tiny", cache, sources=(source,))
  assert folder == cache / "tiny"
  assert (folder / "u.data").read_bytes() == RATINGS
  assert not [p for p in folder.iterdir() if p.name.startswith(".")]
  archive.unlink()  # the cache alone now serves the data
  assert sources.fetch("tiny", cache, sources=(source,)) == folder


def test_header_lines_are_dropped(tmp_path, tiny_dataset):
  archive = make_zip(
    tmp_path / "tiny.zip",
    {
      "tiny/u.data": b"user\titem\trating\ttime\n" + RATINGS,
      "tiny/u.item": b"x",
    },
  )
  members = (
    sources.Member("u.data", "tiny/u.data", header_lines=1),
    sources.Member("items.txt", "tiny/u.item"),
  )
  source = zip_source(archive, digest(archive), members=members)
  folder = sources.fetch("tiny", tmp_path / "cache", sources=(source,))
  assert (folder / "u.data").read_bytes() == RATINGS


def test_archive_checksum_mismatch_is_discarded(tmp_path, tiny_dataset):
  archive = make_zip(
    tmp_path / "tiny.zip", {"tiny/u.data": RATINGS, "tiny/u.item": b"x"}
  )
  cache = tmp_path / "cache"
  source = zip_source(archive, "sha256:" + "0" * 64)
  with pytest.raises(sources.FetchError) as caught:
    sources.fetch("tiny", cache, sources=(source,))
  message = str(caught.value)
  assert "local tiny.zip" in message and "checksum mismatch" in message
  assert not any((cache / "tiny").iterdir())


def test_file_checksum_mismatch_is_discarded(tmp_path, tiny_dataset):
  archive = make_zip(
    tmp_path / "tiny.zip",
    {"tiny/u.data": RATINGS + b"3\t3\t1\t1\n", "tiny/u.item": b"x"},
  )
  cache = tmp_path / "cache"
  with pytest.raises(
    sources.FetchError, match=r"checksum mismatch for u\.data"
  ):
    sources.fetch(
      "tiny", cache, sources=(zip_source(archive, digest(archive)),)
    )
  assert not any((cache / "tiny").iterdir())


def test_truncated_download_never_reaches_the_cache(tmp_path, tiny_dataset):
  good = make_zip(
    tmp_path / "good.zip", {"tiny/u.data": RATINGS, "tiny/u.item": b"x"}
  )
  truncated = tmp_path / "tiny.zip"
  truncated.write_bytes(good.read_bytes()[:-40])
  cache = tmp_path / "cache"
  with pytest.raises(sources.FetchError):
    sources.fetch(
      "tiny", cache, sources=(zip_source(truncated, digest(truncated)),)
    )
  assert not any((cache / "tiny").iterdir())


def test_falls_back_to_the_next_source(tmp_path, tiny_dataset):
  archive = make_zip(
    tmp_path / "tiny.zip", {"tiny/u.data": RATINGS, "tiny/u.item": b"x"}
  )
  missing = zip_source(tmp_path / "absent.zip", digest(archive))
  folder = sources.fetch(
    "tiny",
    tmp_path / "cache",
    sources=(missing, zip_source(archive, digest(archive))),
  )
  assert (folder / "u.data").read_bytes() == RATINGS


@pytest.mark.parametrize(
  "name", ["/etc/passwd", "../evil", "tiny/../../evil", "C:\\evil"]
)
def test_unsafe_member_names_are_refused(name):
  with pytest.raises(sources.FetchError, match="leaves the target"):
    sources.check_member_name(name)


def test_traversal_member_is_refused_in_fetch(tmp_path, tiny_dataset):
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w") as archive:
    archive.writestr("../u.data", RATINGS)
    archive.writestr("tiny/u.item", b"x")
  path = tmp_path / "evil.zip"
  path.write_bytes(buffer.getvalue())
  members = (
    sources.Member("u.data", "../u.data"),
    sources.Member("items.txt", "tiny/u.item"),
  )
  cache = tmp_path / "cache"
  with pytest.raises(sources.FetchError, match="leaves the target"):
    sources.fetch(
      "tiny", cache, sources=(zip_source(path, digest(path), members=members),)
    )
  assert not (tmp_path / "u.data").exists()
  assert not any((cache / "tiny").iterdir())


def test_unknown_dataset():
  with pytest.raises(ValueError, match="unknown data set 'ml-25m'"):
    sources.fetch("ml-25m")
