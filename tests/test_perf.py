"""The host allocator setting `genjax train` applies on CPU."""

import subprocess
import sys

import pytest

# A 48 MiB block malloc'ed, written and freed 10 times; minor page faults per round.
FAULTS_PER_ROUND = """
import ctypes, resource, sys
if sys.argv[1] == "heap":
    from genjax.perf import keep_large_allocations_in_heap
    assert keep_large_allocations_in_heap()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
def use_once():
    block = libc.malloc(48 << 20)
    ctypes.memset(block, 1, 48 << 20)
    libc.free(block)
use_once()  # the first use faults in either mode
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    use_once()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_heap_malloc_stops_refaulting_large_blocks():
    faults = {mode: float(subprocess.run([sys.executable, "-c", FAULTS_PER_ROUND, mode],
                                         capture_output=True, text=True, check=True).stdout)
              for mode in ("default", "heap")}
    pages = (48 << 20) / 4096
    if faults["default"] < 0.9 * pages:
        pytest.skip(f"{faults['default']} faults per fresh 48 MiB map: huge pages back them here")
    assert faults["heap"] < 0.01 * pages
