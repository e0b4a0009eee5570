"""What goes wrong with the history, for callers to catch."""

from __future__ import annotations


class StoreError(Exception):
    """The history database cannot be used (newer schema, not a database, ...)."""


class StoreClosed(StoreError):
    """A write or read was attempted after `close()`."""
