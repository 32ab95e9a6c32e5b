"""MovieLens files: parsing, official and random splits, id remapping.

ML-100k ``u.data`` and its split files are tab separated
(``user item rating timestamp``); ML-1M ``ratings.dat`` uses ``::``. Every
line is kept (there is no header to skip), ratings stay float32 so that
fractional ratings survive, and any malformed line raises ``DataError`` with
the file, the line number and the problem.

The official ML-100k splits are rebuilt from ``u.data`` exactly as
GroupLens's ``mku.sh`` and ``allbut.pl`` made them; tests compare the
rebuilt files with the published SHA-256.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re

import numpy as np

from aejax.data import sources
from aejax.data.ratings import Ratings
from aejax.errors import DataError

OFFICIAL_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
RATING_RANGE = (0.5, 5.0)
_MAX_ID = 2**31 - 1
_MAX_TIMESTAMP = 2**62
# Plain decimal integers and numbers only: Python's own parsers also accept
# digit separators ("1_000"), "nan", "infinity" and unbounded lengths, none
# of which belongs in a rating file.
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
_DIGITS = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]{1,16}(\.[0-9]{0,16})?|\.[0-9]{1,16})")


@dataclasses.dataclass(frozen=True)
class RawRatings:
  """Ratings as read from a file, ids not yet remapped, in file order."""

  user_ids: np.ndarray  # int64
  item_ids: np.ndarray  # int64
  values: np.ndarray  # float32
  timestamps: np.ndarray  # int64

  def __len__(self) -> int:
    return len(self.values)

  def take(self, index: np.ndarray) -> RawRatings:
    """The ratings at ``index``, in its order.

    Args:
      index: integer positions or a boolean mask over the ratings.

    Returns:
      The selected ratings, ids still raw.
    """
    return RawRatings(
      self.user_ids[index],
      self.item_ids[index],
      self.values[index],
      self.timestamps[index],
    )


def parse_ratings(
  path: os.PathLike | str,
  separator: str = "\t",
  rating_range: tuple[float, float] = RATING_RANGE,
  encoding: str = "ascii",
) -> RawRatings:
  """Parses a ``user<sep>item<sep>rating<sep>timestamp`` file.

  Args:
    path: the file.
    separator: ``"\\t"`` for ML-100k, ``"::"`` for ML-1M.
    rating_range: inclusive bounds a rating must lie in.
    encoding: the text encoding of the file.

  Returns:
    The ratings in file order; no line is skipped.

  Raises:
    DataError: naming the file, the line and the problem, for an unreadable
      file, an empty file, a line without exactly four fields, a field that
      is not a number, an id outside ``[1, 2**31 - 1]``, a rating that is
      not finite or lies outside ``rating_range``, a negative timestamp, or
      a second rating of the same user and item.
  """
  path = pathlib.Path(path)
  lines = _read(path).splitlines()
  if not lines:
    raise DataError(path, 1, "the file holds no ratings")

  low, high = rating_range
  n = len(lines)
  users = np.empty(n, np.int64)
  items = np.empty(n, np.int64)
  values = np.empty(n, np.float32)
  stamps = np.empty(n, np.int64)
  for index, raw in enumerate(lines):
    number = index + 1
    try:
      line = raw.decode(encoding)
    except UnicodeDecodeError:
      raise DataError(path, number, f"not {encoding} text") from None
    fields = line.split(separator)
    if len(fields) != 4:
      if len(fields) == 1 and not line.strip():
        raise DataError(path, number, "empty line")
      raise DataError(
        path,
        number,
        f"expected 4 fields separated by {separator!r}, found "
        f"{len(fields)}: {line[:60]!r}",
      )
    user = _parse_id(fields[0], "user id", path, number)
    item = _parse_id(fields[1], "item id", path, number)
    rating = _parse_rating(fields[2], path, number)
    if not low <= rating <= high:
      raise DataError(
        path,
        number,
        f"rating {_quote(fields[2])} outside [{low:g}, {high:g}]",
      )
    stamp = _parse_int(fields[3], "timestamp", path, number)
    if not 0 <= stamp <= _MAX_TIMESTAMP:
      raise DataError(
        path, number, f"timestamp {_quote(fields[3])} out of range"
      )
    users[index], items[index] = user, item
    values[index], stamps[index] = rating, stamp

  _check_unique(path, users, items)
  return RawRatings(users, items, values, stamps)


def _quote(field: str) -> str:
  """``field`` for a message: quoted, escaped, and cut to a readable size."""
  return repr(field) if len(field) <= 40 else repr(field[:40]) + "..."


def _parse_int(field: str, what: str, path, number: int) -> int:
  if len(field) <= 18 and field.isascii() and field.isdigit():
    return int(field)  # the common case, without the regular expression
  text = field.strip()
  if not _INTEGER.fullmatch(text):
    if _DIGITS.fullmatch(text):
      raise DataError(path, number, f"{what} {_quote(field)} out of range")
    raise DataError(path, number, f"{what} {_quote(field)} is not an integer")
  return int(text)


def _parse_id(field: str, what: str, path, number: int) -> int:
  value = _parse_int(field, what, path, number)
  if not 1 <= value <= _MAX_ID:
    raise DataError(
      path, number, f"{what} {_quote(field)} outside [1, {_MAX_ID}]"
    )
  return value


def _parse_rating(field: str, path, number: int) -> float:
  if len(field) <= 16 and field.isascii() and field.isdigit():
    return float(field)
  text = field.strip()
  if _NUMBER.fullmatch(text):
    return float(text)
  reason = "is not a number"
  if len(text) < 16:
    try:
      if not math.isfinite(float(text)):
        reason = "is not finite"
    except ValueError:
      pass
  raise DataError(path, number, f"rating {_quote(field)} {reason}")


def _check_unique(path, users: np.ndarray, items: np.ndarray) -> None:
  order = np.lexsort((items, users))
  same = (np.diff(users[order]) == 0) & (np.diff(items[order]) == 0)
  if same.any():
    at = np.flatnonzero(same)[0]
    first, second = sorted((int(order[at]), int(order[at + 1])))
    raise DataError(
      path,
      second + 1,
      f"second rating of user {users[first]} for item {items[first]} "
      f"(first on line {first + 1})",
    )


def sort_by_user_item(raw: RawRatings) -> RawRatings:
  """Orders ratings by user, then item, as the official split files are.

  Args:
    raw: the ratings.

  Returns:
    The same ratings sorted by raw user id, then raw item id (stable).
  """
  return raw.take(np.lexsort((raw.item_ids, raw.user_ids)))


def official_split(raw: RawRatings, name: str) -> tuple[RawRatings, RawRatings]:
  """Rebuilds an official ML-100k split from ``u.data`` in file order.

  ``uN`` (N = 1..5): the test file holds lines ``20000 (N-1) + 1`` to
  ``20000 N``; the base file holds the rest. ``ua`` / ``ub``: reading the
  file in order, each user's 1st to 10th ratings (``ua``) or 11th to 20th
  (``ub``) form the test file. Both files are then sorted by user and item.

  Args:
    raw: all of ``u.data``, in its original line order.
    name: one of ``u1`` .. ``u5``, ``ua``, ``ub``.

  Returns:
    ``(base, test)``.

  Raises:
    ValueError: an unknown split name, or a ``uN`` split of anything but
      100,000 ratings.
  """
  n = len(raw)
  if name in ("u1", "u2", "u3", "u4", "u5"):
    if n != 100_000:
      raise ValueError(
        f"split {name} needs the 100,000 lines of u.data, not {n}"
      )
    fold = int(name[1])
    test = np.zeros(n, bool)
    test[20_000 * (fold - 1) : 20_000 * fold] = True
  elif name in ("ua", "ub"):
    offset = 0 if name == "ua" else 10
    # The rank of each rating among its user's ratings, in file order.
    order = np.argsort(raw.user_ids, kind="stable")
    sorted_users = raw.user_ids[order]
    starts = np.searchsorted(sorted_users, sorted_users, side="left")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - starts
    test = (rank >= offset) & (rank < offset + 10)
  else:
    raise ValueError(
      f"unknown official split {name!r}; known: {', '.join(OFFICIAL_SPLITS)}"
    )
  base = sort_by_user_item(raw.take(~test))
  held = sort_by_user_item(raw.take(test))
  return base, held


def random_split(
  raw: RawRatings, test_fraction: float, seed: int
) -> tuple[RawRatings, RawRatings]:
  """A seeded random split of ratings: ``(train, test)``.

  A seeded permutation picks the held-out ratings, so exactly
  ``round(test_fraction * n)`` ratings are held out and the same seed holds
  out the same ones.

  Args:
    raw: the ratings.
    test_fraction: the held-out share, in ``(0, 1)``.
    seed: the seed of ``numpy.random.default_rng``.

  Returns:
    ``(train, test)``, each in the file order of ``raw``.

  Raises:
    ValueError: ``test_fraction`` is not in ``(0, 1)``.
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test fraction must lie in (0, 1), not {test_fraction}")
  n = len(raw)
  order = np.random.default_rng(seed).permutation(n)
  n_test = round(test_fraction * n)
  test = np.zeros(n, bool)
  test[order[:n_test]] = True
  return raw.take(~test), raw.take(test)


def format_lines(raw: RawRatings) -> bytes:
  """The ratings as ML-100k text (tab separated, LF line ends).

  Args:
    raw: the ratings, in the order of the lines to write.

  Returns:
    ASCII ``user<TAB>item<TAB>rating<TAB>timestamp`` lines; a whole rating
    shows without decimals.
  """
  out = []
  for user, item, value, stamp in zip(
    raw.user_ids, raw.item_ids, raw.values, raw.timestamps, strict=True
  ):
    rating = f"{int(value)}" if float(value).is_integer() else f"{value:g}"
    out.append(f"{user}\t{item}\t{rating}\t{stamp}\n")
  return "".join(out).encode("ascii")


@dataclasses.dataclass(frozen=True)
class IdMap:
  """Dense indices for raw ids: ``index = searchsorted(ids, raw_id)``."""

  ids: np.ndarray  # sorted unique raw ids

  @classmethod
  def from_ids(cls, *arrays: np.ndarray) -> IdMap:
    """The map of every id found in any of ``arrays``.

    Args:
      *arrays: raw ids, e.g. the user ids of the training and test files.

    Returns:
      An ``IdMap`` over their sorted unique ids.
    """
    return cls(np.unique(np.concatenate(arrays)))

  def __len__(self) -> int:
    return len(self.ids)

  def index(self, raw_ids: np.ndarray) -> np.ndarray:
    """Dense indices of ``raw_ids``: each id's position in ``ids``.

    Args:
      raw_ids: ids that the map holds.

    Returns:
      int32 indices in ``[0, len(self))``.

    Raises:
      KeyError: an id is not in the map; the first such id is named.
    """
    index = np.searchsorted(self.ids, raw_ids)
    found = index < len(self.ids)
    found[found] = self.ids[index[found]] == raw_ids[found]
    if not found.all():
      missing = raw_ids[~found][0]
      raise KeyError(f"id {missing} is not in the id map")
    return index.astype(np.int32)


def to_ratings(raw: RawRatings, users: IdMap, items: IdMap) -> Ratings:
  """Remaps raw ids to dense indices.

  Args:
    raw: the ratings.
    users: the map of user ids.
    items: the map of item ids.

  Returns:
    ``Ratings`` with ``n_users = len(users)`` and ``n_items = len(items)``.

  Raises:
    KeyError: an id of ``raw`` is not in its map.
  """
  return Ratings(
    users=users.index(raw.user_ids),
    items=items.index(raw.item_ids),
    values=raw.values.astype(np.float32),
    n_users=len(users),
    n_items=len(items),
  )


def parse_titles(path: os.PathLike | str) -> dict[int, str]:
  """Movie titles by raw item id, from any of the known item files.

  Reads ML-100k ``u.item`` (``|`` separated, latin-1), the PyPI copy of it
  (tab separated with a header, UTF-8; titles lack the year, which a third
  column holds) and ML-1M ``movies.dat`` (``::`` separated, latin-1).
  Blank lines are skipped.

  Args:
    path: the file.

  Returns:
    The title of each item id.

  Raises:
    DataError: naming the file, the line and the problem, for an unreadable
      file, text that is not in the file's encoding, a line without an id
      and a title (and a year, in the PyPI copy), an id outside
      ``[1, 2**31 - 1]``, a second title for one id, or no title at all.
  """
  path = pathlib.Path(path)
  lines = _read(path).splitlines()
  if lines and lines[0].startswith(b"item_id:token"):
    encoding, separator, first, wanted = "utf-8", "\t", 1, 3
  else:
    encoding, first, wanted = "latin-1", 0, 2
    separator = "::" if lines and b"::" in lines[0] else "|"
  titles: dict[int, str] = {}
  for index in range(first, len(lines)):
    number = index + 1
    try:
      line = lines[index].decode(encoding)
    except UnicodeDecodeError:
      raise DataError(path, number, f"not {encoding} text") from None
    if not line.strip():
      continue
    fields = line.split(separator)
    if len(fields) < wanted:
      what = "an id, a title and a year" if wanted == 3 else "an id and a title"
      raise DataError(
        path,
        number,
        f"expected {what} separated by {separator!r}: {_quote(line)}",
      )
    item = _parse_id(fields[0], "item id", path, number)
    if item in titles:
      raise DataError(path, number, f"second title for item id {item}")
    year = f" ({fields[2]})" if wanted == 3 and fields[2] else ""
    titles[item] = fields[1] + year
  if not titles:
    raise DataError(path, 0, "the file holds no titles")
  return titles


def _read(path: pathlib.Path) -> bytes:
  try:
    return path.read_bytes()
  except OSError as error:
    reason = error.strerror or type(error).__name__
    raise DataError(path, 0, f"cannot read: {reason}") from None


@dataclasses.dataclass(frozen=True)
class SplitData:
  """A data set split into train, optional validation, and test ratings.

  Attributes:
    name: data set name.
    split: split name.
    train: ratings the model learns from (and reads as input).
    valid: ratings carved from the training split for model selection, or
      None.
    test: held-out ratings, scored once.
    user_ids: raw user id of each dense user index.
    item_ids: raw item id of each dense item index.
    titles: raw item id to title, when an item file is available.
  """

  name: str
  split: str
  train: Ratings
  test: Ratings
  user_ids: np.ndarray
  item_ids: np.ndarray
  valid: Ratings | None = None
  titles: dict[int, str] | None = None

  @property
  def n_users(self) -> int:
    """Number of users over train, validation and test together."""
    return len(self.user_ids)

  @property
  def n_items(self) -> int:
    """Number of items over train, validation and test together."""
    return len(self.item_ids)


def with_validation(data: SplitData, fraction: float, seed: int) -> SplitData:
  """Moves a seeded share of the training ratings into a validation set.

  Exactly ``round(fraction * len(data.train))`` training ratings, drawn by
  a permutation seeded with ``(seed, 1)`` (a stream apart from the random
  split's), become ``valid``; the rest stay in ``train``. Only training
  ratings are read, so the test ratings cannot influence the carve.

  Args:
    data: a split without a validation set.
    fraction: the share to hold out, in ``[0, 1)``; 0 returns ``data``.
    seed: the carve's seed.

  Returns:
    The split with ``valid`` set (``None`` when ``fraction`` is 0).

  Raises:
    ValueError: ``fraction`` outside ``[0, 1)``, or ``data`` has a
      validation set already.
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"valid_fraction must lie in [0, 1), not {fraction}")
  if data.valid is not None:
    raise ValueError(f"{data.name} {data.split} has a validation set already")
  if fraction == 0.0:
    return data
  n = len(data.train)
  order = np.random.default_rng((seed, 1)).permutation(n)
  held = np.zeros(n, bool)
  held[order[: round(fraction * n)]] = True
  return dataclasses.replace(
    data, train=data.train.subset(~held), valid=data.train.subset(held)
  )


def _drop_first(raw: RawRatings) -> RawRatings:
  return raw.take(np.arange(1, len(raw)))


def load(
  dataset: str = "ml-100k",
  split: str = "u1",
  data_dir: os.PathLike | str | None = None,
  cache_dir: os.PathLike | str | None = None,
  seed: int = 0,
  test_fraction: float = 0.1,
  drop_first_line: bool = False,
) -> SplitData:
  """Loads a MovieLens data set and splits it.

  Args:
    dataset: ``ml-100k`` or ``ml-1m``.
    split: an official ML-100k split (``u1`` .. ``u5``, ``ua``, ``ub``) or
      ``random`` (a seeded split holding out ``test_fraction``).
    data_dir: an extracted folder to read instead of the cache: for ML-100k
      one holding ``u.data`` or the split's ``<split>.base`` and
      ``<split>.test``; for ML-1M one holding ``ratings.dat``.
    cache_dir: cache root for downloads (default ``sources.cache_root()``).
    seed: seed of a ``random`` split.
    test_fraction: share of ratings held out by a ``random`` split.
    drop_first_line: lose the first rating of each split file, as the
      tutorial's CSV reader does by taking it for a header. Off by default.

  Returns:
    The split, with dense ids built from train and test together.

  Raises:
    ValueError: an unknown data set or split, or a ``test_fraction``
      outside ``(0, 1)`` for a ``random`` split.
    DataError: ``data_dir`` is not a folder, or a rating or title file is
      missing or cannot be parsed; the file and line are named.
    sources.FetchError: no source gave verified files.
  """
  if dataset not in ("ml-100k", "ml-1m"):
    raise ValueError(f"unknown data set {dataset!r}; known: ml-100k, ml-1m")
  if split != "random" and (
    dataset != "ml-100k" or split not in OFFICIAL_SPLITS
  ):
    known = ", ".join((*OFFICIAL_SPLITS, "random"))
    if dataset == "ml-1m":
      known = "random"
    raise ValueError(f"unknown split {split!r} for {dataset}; known: {known}")

  folder = pathlib.Path(data_dir) if data_dir else None
  if folder is not None and not folder.is_dir():
    raise DataError(folder, 0, "data_dir is not a folder")
  if folder is None:
    folder = sources.fetch(dataset, cache_dir)

  if dataset == "ml-100k":
    train_raw, test_raw = _load_100k(folder, split, seed, test_fraction)
    item_file = _first_existing(folder, ("items.txt", "u.item"))
  else:
    ratings_path = folder / "ratings.dat"
    if not ratings_path.is_file():
      raise DataError(folder, 0, "no ratings.dat in this folder")
    raw = parse_ratings(ratings_path, separator="::", encoding="latin-1")
    train_raw, test_raw = random_split(raw, test_fraction, seed)
    item_file = _first_existing(folder, ("movies.dat",))

  if drop_first_line:
    train_raw, test_raw = _drop_first(train_raw), _drop_first(test_raw)
  users = IdMap.from_ids(train_raw.user_ids, test_raw.user_ids)
  items = IdMap.from_ids(train_raw.item_ids, test_raw.item_ids)
  return SplitData(
    name=dataset,
    split=split,
    train=to_ratings(train_raw, users, items),
    test=to_ratings(test_raw, users, items),
    user_ids=users.ids,
    item_ids=items.ids,
    titles=parse_titles(item_file) if item_file else None,
  )


def _first_existing(folder: pathlib.Path, names) -> pathlib.Path | None:
  for name in names:
    if (folder / name).is_file():
      return folder / name
  return None


def _load_100k(
  folder: pathlib.Path, split: str, seed: int, test_fraction: float
) -> tuple[RawRatings, RawRatings]:
  base, test = folder / f"{split}.base", folder / f"{split}.test"
  if split != "random" and base.is_file() and test.is_file():
    return parse_ratings(base), parse_ratings(test)
  data = folder / "u.data"
  if not data.is_file():
    raise DataError(
      folder, 0, f"holds neither u.data nor {split}.base and {split}.test"
    )
  raw = parse_ratings(data)
  if split == "random":
    return random_split(raw, test_fraction, seed)
  return official_split(raw, split)
