"""The exceptions raised when a data set cannot be found, read, trusted or fetched.

Every message is meant to be read by a person at a terminal: it names the
file, every place that was looked in, and the command that fixes it.
"""

from __future__ import annotations


class DataError(Exception):
    """Base class of every data-set error raised by :mod:`stalesgd.data`."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data set (or one of its files) is in none of the places searched."""


class DataCorruptError(DataError, ValueError):
    """A file was found but its content is wrong (checksum, structure, compression)."""


class DataReadError(DataError, OSError):
    """A file was found but cannot be read (no permission, an I/O error)."""


class DataDownloadError(DataError, ConnectionError):
    """``stalesgd data download`` could not fetch or verify a file."""
