"""The project's error tree.

::

    PairstackError
    ├── ConfigError        a config file or value is wrong (file, key path, reason)
    ├── DataError          input data is malformed (also a ValueError)
    │   └── UploadError    an uploaded/imported file is malformed (line, column)
    ├── FeedError          the exchange connection or protocol failed
    ├── StoreError         the Parquet store cannot be read or written
    └── NumericalError     a computation cannot be done on the given numbers (also a ValueError)
"""

from __future__ import annotations


class PairstackError(Exception):
    """Base of every error raised on purpose by pairstack."""


class ConfigError(PairstackError):
    """A config file or value is wrong; the message names the file and key path."""


class DataError(PairstackError, ValueError):
    """Input data is malformed (unsorted times, NaN prices, mismatched lengths, ...)."""


class UploadError(DataError):
    """A file given by a user is malformed; the message names the file, line and column."""

    def __init__(self, message: str, *, line: int | None = None, column: str | None = None):
        super().__init__(message)
        self.line = line
        self.column = column


class FeedError(PairstackError):
    """The exchange (or simulator) connection or protocol failed."""


class StoreError(PairstackError):
    """The Parquet store cannot be read or written."""


class NumericalError(PairstackError, ValueError):
    """A computation cannot be done on the given numbers (too few points, singular fit)."""
