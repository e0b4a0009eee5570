"""The C heap's mmap threshold pinned (console/heap.py): big buffers stay in mappings of their own."""

from __future__ import annotations

import subprocess
import sys

import pytest

# In a process of its own (the test runner's heap stays as it is): a 300 KB block freed, then
# a 200 KB one. glibc maps the first; freeing it raises an adapting threshold past 200 KB, so
# the second comes from the heap -- unless the threshold is pinned.
PROBE = """
import ctypes, sys
from console.heap import mallinfo2, pin_mmap_threshold

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "pinned":
    assert pin_mmap_threshold()
libc.free(libc.malloc(300_000))
mapped = mallinfo2().hblkhd
block = libc.malloc(200_000)
print("mapped" if mallinfo2().hblkhd > mapped else "heap")
libc.free(block)
"""


def _where_the_second_block_went(mode: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_pinned_threshold_keeps_big_blocks_out_of_the_heap() -> None:
    assert _where_the_second_block_went("adapting") == "heap"  # what the pin is for
    assert _where_the_second_block_went("pinned") == "mapped"


def test_the_cli_pins_it_for_every_command(monkeypatch) -> None:
    from console import cli

    calls = []
    monkeypatch.setattr(cli, "pin_mmap_threshold", lambda: calls.append(True) or True)
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0 and calls == [True]
