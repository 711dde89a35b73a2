"""Errors for bad input that every layer raises; here, at the bottom, so that the file readers in
utils can raise the same error as the datasets above them."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data; the message names the offending file or field."""


def error_reason(error: BaseException, limit: int | None = None) -> str:
    """One line saying why something failed, for summaries, metrics.json and logs: a DataError as it
    is (its message names the input), anything else prefixed by its type; a message of several
    lines joined into one; cut to `limit` characters."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if not isinstance(error, DataError):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."
