"""The one error type for input that cannot be read: file, line and reason.

Every parser in aejax (rating and title files, and the files a workdir
keeps for resuming) raises ``DataError`` for bad content, so a caller needs
one ``except`` clause, and the command line turns it into one line and exit
status 2.
"""

from __future__ import annotations

import os


class DataError(ValueError):
  """A file that cannot be read, with where and why.

  Attributes:
    path: the file.
    line: 1-based line number, or 0 when the problem is the whole file.
    reason: what is wrong.
  """

  def __init__(self, path: os.PathLike | str, line: int, reason: str):
    self.path = str(path)
    self.line = line
    self.reason = reason
    where = f"{self.path}:{line}" if line else self.path
    super().__init__(f"{where}: {reason}")
