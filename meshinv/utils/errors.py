"""Errors for bad input that every layer raises; here, at the bottom, so that the file readers in
utils can raise the same error as the datasets above them."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data; the message names the offending file or field."""
