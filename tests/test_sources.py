"""Fetching, verifying and caching data files safely."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import stat
import tarfile
import threading
import time
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


class _TruncatingHandler(http.server.BaseHTTPRequestHandler):
  """Declares the whole archive, sends part of it, and hangs up."""

  body = b""

  def do_GET(self):
    self.send_response(200)
    self.send_header("Content-Length", str(len(self.body)))
    self.end_headers()
    self.wfile.write(self.body[: len(self.body) // 2])
    self.wfile.flush()
    self.close_connection = True

  def log_message(self, *args):
    pass


@pytest.fixture
def truncating_server(tmp_path):
  archive = make_zip(
    tmp_path / "served.zip", {"tiny/u.data": RATINGS, "tiny/u.item": b"x"}
  )
  handler = type(
    "Handler", (_TruncatingHandler,), {"body": archive.read_bytes()}
  )
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{server.server_address[1]}/ml.zip", archive
  server.shutdown()
  server.server_close()


def test_connection_cut_mid_download_is_discarded(
  tmp_path, tiny_dataset, truncating_server
):
  url, archive = truncating_server
  source = zip_source(archive, digest(archive), url=url, label="local server")
  cache = tmp_path / "cache"
  with pytest.raises(sources.FetchError) as caught:
    sources.fetch("tiny", cache, sources=(source,))
  message = str(caught.value)
  assert "local server: truncated download" in message
  assert f"of {archive.stat().st_size} bytes" in message
  assert not any((cache / "tiny").iterdir())


def test_oversized_download_and_member_are_refused(tmp_path, tiny_dataset):
  archive = make_zip(
    tmp_path / "tiny.zip", {"tiny/u.data": RATINGS, "tiny/u.item": b"x"}
  )
  cache = tmp_path / "cache"
  small = zip_source(archive, digest(archive), max_bytes=100)
  with pytest.raises(sources.FetchError, match="download exceeds 100 bytes"):
    sources.fetch("tiny", cache, sources=(small,))
  # A member that inflates past the limit (a "zip bomb", in small).
  big = tmp_path / "big.zip"
  with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as archive:
    archive.writestr("tiny/u.data", RATINGS * 200)
    archive.writestr("tiny/u.item", b"x")
  member = zip_source(big, digest(big), max_bytes=big.stat().st_size)
  with pytest.raises(sources.FetchError, match=r"'tiny/u\.data' exceeds"):
    sources.fetch("tiny", cache, sources=(member,))
  assert not any((cache / "tiny").iterdir())


def make_tar(path, entries):
  """``entries``: (name, type, payload); payload is bytes or a link target."""
  with tarfile.open(path, "w:gz") as archive:
    for name, kind, payload in entries:
      info = tarfile.TarInfo(name)
      info.type = kind
      if kind == tarfile.REGTYPE:
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
      else:
        info.linkname = payload
        archive.addfile(info)
  return path


TAR_MEMBERS = (
  sources.Member("u.data", "tiny/u.data"),
  sources.Member("items.txt", "tiny/u.item"),
)


@pytest.mark.parametrize(
  ("extra", "reason"),
  [
    (("../../evil", tarfile.REGTYPE, b"x"), "leaves the target"),
    (("/etc/evil", tarfile.REGTYPE, b"x"), "leaves the target"),
    (("tiny/link", tarfile.SYMTYPE, "../../etc/passwd"), "leaves the target"),
    (("tiny/link", tarfile.SYMTYPE, "/etc/passwd"), "is absolute"),
    (("tiny/hard", tarfile.LNKTYPE, "../outside"), "leaves the target"),
  ],
)
def test_tar_with_an_unsafe_entry_is_refused_whole(
  tmp_path, tiny_dataset, extra, reason
):
  # The unsafe entry is not one of the files we want: the archive is
  # refused anyway, as no honest source carries such an entry.
  archive = make_tar(
    tmp_path / "tiny.tar.gz",
    [
      ("tiny/u.data", tarfile.REGTYPE, RATINGS),
      ("tiny/u.item", tarfile.REGTYPE, b"x"),
      extra,
    ],
  )
  source = zip_source(archive, digest(archive), members=TAR_MEMBERS)
  cache = tmp_path / "cache"
  with pytest.raises(sources.FetchError, match=reason):
    sources.fetch("tiny", cache, sources=(source,))
  assert not any((cache / "tiny").iterdir())
  assert not (tmp_path / "evil").exists()


def test_safe_tar_links_are_allowed_but_never_read(tmp_path, tiny_dataset):
  archive = make_tar(
    tmp_path / "tiny.tar.gz",
    [
      ("tiny/real", tarfile.REGTYPE, RATINGS),
      ("tiny/u.data", tarfile.SYMTYPE, "real"),
      ("tiny/u.item", tarfile.REGTYPE, b"x"),
    ],
  )
  source = zip_source(archive, digest(archive), members=TAR_MEMBERS)
  with pytest.raises(sources.FetchError, match="not a regular file"):
    sources.fetch("tiny", tmp_path / "cache", sources=(source,))


def test_zip_link_out_of_the_archive_is_refused(tmp_path, tiny_dataset):
  path = tmp_path / "tiny.zip"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("tiny/u.data", RATINGS)
    archive.writestr("tiny/u.item", b"x")
    link = zipfile.ZipInfo("tiny/escape")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive.writestr(link, b"../../../etc/passwd")
  with pytest.raises(sources.FetchError, match=r"'tiny/escape' -> .* leaves"):
    sources.fetch(
      "tiny", tmp_path / "cache", sources=(zip_source(path, digest(path)),)
    )


def test_missing_member_names_it(tmp_path, tiny_dataset):
  archive = make_zip(tmp_path / "tiny.zip", {"tiny/u.data": RATINGS})
  with pytest.raises(
    sources.FetchError, match=r"archive has no member 'tiny/u\.item'"
  ):
    sources.fetch(
      "tiny",
      tmp_path / "cache",
      sources=(zip_source(archive, digest(archive)),),
    )


def test_scratch_of_killed_fetches_is_removed_when_stale(
  tmp_path, tiny_dataset
):
  folder = tmp_path / "cache" / "tiny"
  stale, fresh = folder / ".fetch-old", folder / ".fetch-running"
  for scratch in (stale, fresh):
    (scratch / "pip").mkdir(parents=True)
    (scratch / "pip" / "part.whl").write_bytes(b"partial")
  old = time.time() - 2 * 24 * 3600
  os.utime(stale, (old, old))
  archive = make_zip(
    tmp_path / "tiny.zip", {"tiny/u.data": RATINGS, "tiny/u.item": b"x"}
  )
  sources.fetch(
    "tiny", tmp_path / "cache", sources=(zip_source(archive, digest(archive)),)
  )
  assert not stale.exists() and fresh.exists()
  assert (folder / "u.data").read_bytes() == RATINGS
