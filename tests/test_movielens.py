"""Parsing, splitting and id remapping of MovieLens files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import write_ratings

from aejax.data import movielens
from aejax.data.movielens import DataError

SPLIT_SHA256 = {
  ("u1", "base"): (
    "ce253ec86c448b44fb3ba9a30d12dcfc2e9210cbde71efada3730c22e9ac212a"
  ),
  ("u1", "test"): (
    "18c6014a4b2c7324f250a63f8904a7b16b2b19f911129e346141507b0cbac950"
  ),
  ("ua", "base"): (
    "67b5bcdb380c29f85d56a012ecd88612ae020f30a6730d117a334ee8203b91f2"
  ),
  ("ua", "test"): (
    "d0497e202417720f57a184ec8c66be2d1afa4ff41bb53787c57b28d6bf79bc42"
  ),
}


def test_first_line_is_kept_and_fractional_ratings_survive(tmp_path):
  path = tmp_path / "ratings.tsv"
  write_ratings(path, [(7, 3, 4.5, 10), (2, 9, 1, 11), (7, 1, 3.5, 12)])
  raw = movielens.parse_ratings(path)
  np.testing.assert_array_equal(raw.user_ids, [7, 2, 7])
  np.testing.assert_array_equal(raw.item_ids, [3, 9, 1])
  np.testing.assert_array_equal(raw.values, np.float32([4.5, 1.0, 3.5]))
  np.testing.assert_array_equal(raw.timestamps, [10, 11, 12])
  assert raw.values.dtype == np.float32


def test_crlf_and_missing_final_newline(tmp_path):
  path = tmp_path / "ratings.tsv"
  path.write_bytes(b"1\t2\t3\t4\r\n5\t6\t2\t8")
  raw = movielens.parse_ratings(path)
  np.testing.assert_array_equal(raw.user_ids, [1, 5])
  np.testing.assert_array_equal(raw.values, [3.0, 2.0])


def test_ml1m_titles_are_latin1(tmp_path):
  path = tmp_path / "movies.dat"
  path.write_bytes(
    "1::Toy Story (1995)::Animation\r\n"
    "73::Misérables, Les (1995)::Drama|War\r\n".encode("latin-1")
  )
  titles = movielens.parse_titles(path)
  assert titles == {1: "Toy Story (1995)", 73: "Misérables, Les (1995)"}


def test_ml1m_separator(tmp_path):
  path = tmp_path / "ratings.dat"
  path.write_bytes(b"1::1193::5::978300760\r\n1::661::3::978302109\r\n")
  raw = movielens.parse_ratings(path, separator="::", encoding="latin-1")
  np.testing.assert_array_equal(raw.item_ids, [1193, 661])


@pytest.mark.parametrize(
  ("content", "line", "reason"),
  [
    (b"1\t2\t3\t4\n1,2,3,4\n", 2, "expected 4 fields"),
    (b"1\t2\t3\t4\n5\tx\t3\t4\n", 2, "item id 'x' is not an integer"),
    (b"1\t2\t3\t4\n5\t6\tfive\t4\n", 2, "rating 'five' is not a number"),
    (b"1\t2\t3\t4\n5\t6\t7\t4\n", 2, "rating '7' outside [0.5, 5]"),
    (b"1\t2\t0\t4\n", 1, "rating '0' outside"),
    (b"1\t2\tnan\t4\n", 1, "rating 'nan' is not finite"),
    (b"1\t2\t3\n", 1, "expected 4 fields separated by '\\t', found 3"),
    (b"", 1, "the file holds no ratings"),
    (b"user\titem\trating\ttime\n1\t2\t3\t4\n", 1, "user id 'user'"),
    (b"1\t2\t3\t4\n\n5\t6\t3\t4\n", 2, "empty line"),
    (b"0\t2\t3\t4\n", 1, "user id '0' outside"),
    (b"-3\t2\t3\t4\n", 1, "user id '-3' outside"),
    (b"1\t2\t3\t-4\n", 1, "timestamp '-4' out of range"),
    (b"1\t2\t3\t4\n1\t2\t5\t9\n", 2, "second rating of user 1 for item 2"),
    (b"1\t2\t3\t4\n\xff\xfe\t1\t1\t1\n", 2, "not ascii text"),
  ],
)
def test_bad_lines_name_file_line_and_problem(tmp_path, content, line, reason):
  path = tmp_path / "bad.tsv"
  path.write_bytes(content)
  with pytest.raises(DataError) as caught:
    movielens.parse_ratings(path)
  assert caught.value.line == line
  assert reason in caught.value.reason
  assert str(caught.value).startswith(f"{path}:{line}: ")


def test_ua_takes_each_users_first_ten_ratings_in_file_order():
  rng = np.random.default_rng(0)
  users = np.repeat(np.arange(1, 4), 25)
  rng.shuffle(users)
  n = len(users)
  items = np.zeros(n, np.int64)
  for user in (1, 2, 3):
    where = np.flatnonzero(users == user)
    items[where] = rng.permutation(100)[: len(where)] + 1
  raw = movielens.RawRatings(
    users, items, np.full(n, 3, np.float32), np.arange(n)
  )
  for name, lo in (("ua", 0), ("ub", 10)):
    base, test = movielens.official_split(raw, name)
    assert len(test) == 30 and len(base) == n - 30
    expected = set()
    for user in (1, 2, 3):
      where = np.flatnonzero(users == user)[lo : lo + 10]
      expected |= {(user, int(items[i])) for i in where}
    assert set(
      zip(test.user_ids.tolist(), test.item_ids.tolist(), strict=True)
    ) == (expected)
    assert np.all(np.diff(test.user_ids) >= 0)


def test_random_split_is_seeded_and_exact():
  n = 1000
  raw = movielens.RawRatings(
    np.arange(n) + 1,
    np.ones(n, np.int64),
    np.ones(n, np.float32),
    np.zeros(n, np.int64),
  )
  train, test = movielens.random_split(raw, 0.1, seed=3)
  again, _ = movielens.random_split(raw, 0.1, seed=3)
  other, _ = movielens.random_split(raw, 0.1, seed=4)
  assert len(test) == 100 and len(train) == 900
  np.testing.assert_array_equal(train.user_ids, again.user_ids)
  assert not np.array_equal(train.user_ids, other.user_ids)
  assert not set(train.user_ids) & set(test.user_ids)


def test_load_reads_split_files_and_remaps_ids(tiny_split):
  data = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  base = movielens.parse_ratings(tiny_split / "u1.base")
  test = movielens.parse_ratings(tiny_split / "u1.test")
  assert len(data.train) == len(base) and len(data.test) == len(test)
  all_users = np.union1d(base.user_ids, test.user_ids)
  np.testing.assert_array_equal(data.user_ids, all_users)
  assert data.n_users == len(all_users)
  np.testing.assert_array_equal(data.user_ids[data.train.users], base.user_ids)
  np.testing.assert_array_equal(data.item_ids[data.test.items], test.item_ids)


def test_drop_first_line_loses_one_rating_per_file(tiny_split):
  full = movielens.load("ml-100k", "u1", data_dir=tiny_split)
  dropped = movielens.load(
    "ml-100k", "u1", data_dir=tiny_split, drop_first_line=True
  )
  assert len(dropped.train) == len(full.train) - 1
  assert len(dropped.test) == len(full.test) - 1
  np.testing.assert_array_equal(dropped.train.values, full.train.values[1:])


def test_unknown_split_and_missing_files(tmp_path, tiny_split):
  with pytest.raises(ValueError, match="unknown split 'u9'"):
    movielens.load("ml-100k", "u9", data_dir=tiny_split)
  with pytest.raises(DataError, match=r"holds neither u\.data nor u2\.base"):
    movielens.load("ml-100k", "u2", data_dir=tiny_split)
  with pytest.raises(DataError, match="not a folder"):
    movielens.load("ml-100k", "u1", data_dir=tmp_path / "absent")


@pytest.mark.network
def test_official_splits_match_published_checksums(ml100k_folder):
  raw = movielens.parse_ratings(ml100k_folder / "u.data")
  assert len(raw) == 100_000
  assert hashlib.sha256(movielens.format_lines(raw)).hexdigest() == (
    "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"
  )
  for name in ("u1", "ua"):
    base, test = movielens.official_split(raw, name)
    for part, ratings in (("base", base), ("test", test)):
      digest = hashlib.sha256(movielens.format_lines(ratings)).hexdigest()
      assert digest == SPLIT_SHA256[name, part], (name, part)


@pytest.mark.network
def test_ml100k_u1_shapes_and_titles(ml100k_folder):
  data = movielens.load("ml-100k", "u1", data_dir=ml100k_folder)
  assert (data.n_users, data.n_items) == (943, 1682)
  assert (len(data.train), len(data.test)) == (80_000, 20_000)
  assert len(np.unique(data.test.users)) == 459
  unseen = ~np.isin(data.test.items, data.train.items)
  assert unseen.sum() == 32
  assert data.titles[1] == "Toy Story (1995)"
