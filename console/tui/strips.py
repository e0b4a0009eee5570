"""Textual's strips without the reference cycles that made most of a busy console's garbage.

A `Strip` caches what it derives from itself, and three of its methods cache the strip
*itself* when nothing changes (`divide` at its own length, `extend_cell_length` to its
own length, `crop_extend` over exactly its cells): a strip in its own cache is a cycle,
so it and its seven caches outlive every reference and wait for the cyclic collector.
The compositor divides each line it paints where other widgets' edges cut it, and a
line that no edge cuts is divided at its own length: attached at 1,000 events/s that
was ~5,400 objects a second of cyclic garbage (seven `FIFOCache`s, their dicts and the
segments per strip), all of the console's: it filled the old generations, made the
full collections that paused the UI and fragmented the heap (`bench/tui_load.py
--trace-memory`; `--strips-as-textual` measures without this).

`keep_strips_acyclic()` returns the strip itself uncached in those three cases: the same
results (`tests/test_tui_strips.py`), nothing cyclic. Textual is pinned below 9; the test
checks the methods still behave as these wrappers assume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.style import Style
from textual.strip import Strip

_ORIGINALS: dict[str, Callable[..., Any]] = {}


def _divide(self: Strip, cuts: Iterable[int]) -> Sequence[Strip]:
    cell_length = self.cell_length
    kept = [cut for cut in cuts if cut <= cell_length]
    if kept == [cell_length]:
        return [self]
    return _ORIGINALS["divide"](self, kept)


def _extend_cell_length(self: Strip, cell_length: int, style: Style | None = None) -> Strip:
    if cell_length == self.cell_length:
        return self
    return _ORIGINALS["extend_cell_length"](self, cell_length, style)


def _crop_extend(self: Strip, start: int, end: int, style: Style | None) -> Strip:
    if start <= 0 and end == self.cell_length:  # extended to itself, then cropped to itself
        return self
    return _ORIGINALS["crop_extend"](self, start, end, style)


_ACYCLIC = {"divide": _divide, "extend_cell_length": _extend_cell_length, "crop_extend": _crop_extend}


def keep_strips_acyclic() -> None:
    """Patch `Strip` (once; idempotent)."""
    for name, method in _ACYCLIC.items():
        if name not in _ORIGINALS:
            _ORIGINALS[name] = getattr(Strip, name)
            setattr(Strip, name, method)


def strips_as_textual() -> None:
    """Undo `keep_strips_acyclic` (the benchmark's comparison)."""
    for name, method in list(_ORIGINALS.items()):
        setattr(Strip, name, method)
        del _ORIGINALS[name]
