"""Cheap resizing for Line-API scroll views."""

from __future__ import annotations

from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.widget import Widget


def resize_virtual(view: ScrollView, size: Size) -> bool:
    """Give `view` a new virtual size; True when it changed.

    Assigning `virtual_size` lays out the whole screen; a Line-API view only needs
    its scrollbars updated, and a scrollbar appearing or going still asks for that
    layout. (Textual's own `_size_updated` updates a scroll view the same way.)
    """
    if size == view.virtual_size:
        return False
    view.set_reactive(Widget.virtual_size, size)
    view._scroll_update(size)
    return True
