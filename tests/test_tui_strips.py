"""Textual's strips made acyclic (console/tui/strips.py): the same results, no garbage cycles."""

from __future__ import annotations

import gc

import pytest
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from console.tui.strips import keep_strips_acyclic, strips_as_textual


def _strip() -> Strip:
    return Strip([Segment("hello ", Style(bold=True)), Segment("world")], 11)


def _derive(strip: Strip) -> None:
    """What the compositor and the Line API views do with a line that already fits."""
    strip.divide([11])
    strip.divide(iter([11, 40]))  # cuts past the end are ignored
    strip.extend_cell_length(11)
    strip.crop_extend(0, 11, None)
    strip.crop_extend(-2, 11, None)


def _cyclic_garbage_after(action) -> int:
    gc.collect()
    gc.disable()
    try:
        action()
        return gc.collect()  # what only a cycle kept alive
    finally:
        gc.enable()


@pytest.fixture
def textual_strips():
    strips_as_textual()
    yield
    keep_strips_acyclic()


def test_a_strip_that_already_fits_leaves_no_cycle_behind() -> None:
    keep_strips_acyclic()
    assert _cyclic_garbage_after(lambda: _derive(_strip())) == 0


def test_textual_own_strips_cache_themselves(textual_strips) -> None:
    # What the fix is for (and a tripwire: if Textual stops doing this, the patch can go).
    assert _cyclic_garbage_after(lambda: _derive(_strip())) > 0


@pytest.mark.parametrize(
    "operation",
    [
        lambda s: s.divide([11]),
        lambda s: s.divide([4, 11]),
        lambda s: s.divide([4, 8, 30]),
        lambda s: s.divide([]),
        lambda s: s.extend_cell_length(11),
        lambda s: s.extend_cell_length(15, Style(italic=True)),
        lambda s: s.extend_cell_length(5),
        lambda s: s.crop_extend(0, 11, None),
        lambda s: s.crop_extend(-3, 11, None),
        lambda s: s.crop_extend(2, 11, None),
        lambda s: s.crop_extend(0, 14, Style(italic=True)),
        lambda s: s.crop_extend(3, 6, None),
    ],
)
def test_the_same_results_as_textual(operation, textual_strips) -> None:
    expected = operation(_strip())
    keep_strips_acyclic()
    got = operation(_strip())

    def shown(value):
        if isinstance(value, Strip):
            return (list(value), value.cell_length)
        return [shown(strip) for strip in value]

    assert shown(got) == shown(expected)


def test_a_strip_that_fits_is_itself() -> None:
    keep_strips_acyclic()
    strip = _strip()
    assert strip.divide([11]) == [strip] and strip.divide([11])[0] is strip
    assert strip.extend_cell_length(11) is strip
    assert strip.crop_extend(0, 11, None) is strip


def test_the_app_uses_them() -> None:
    import console.tui.app  # noqa: F401  (importing the app applies the fix)
    from console.tui import strips

    assert Strip.divide is strips._divide
    assert Strip.crop_extend is strips._crop_extend
    assert Strip.extend_cell_length is strips._extend_cell_length
