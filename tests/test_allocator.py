"""The allocator tuning applied at import: on glibc, large freed buffers stay in the heap; an opt-out exists."""
import subprocess
import sys

import pytest

CHECK = """
import ctypes, resource, sys
import facekd  # applies the tuning (unless FACEKD_MALLOC_TUNING=0)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20  # 64 MiB, above glibc's default (dynamic, at most 32 MiB) mmap threshold
p = libc.malloc(size); ctypes.memset(p, 1, size); libc.free(p)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    p = libc.malloc(size); ctypes.memset(p, 1, size); libc.free(p)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(env_value: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHECK], env={"FACEKD_MALLOC_TUNING": env_value, "PATH": ""},
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_allocator_reuses_large_buffers_and_can_be_turned_off():
    from facekd.allocator import tune_allocator

    assert tune_allocator() is True
    pages = (64 << 20) // 4096
    # tuned: the 64 MiB buffer is reused from the heap, so touching it again faults (almost) no new pages
    assert _page_faults("1") < pages // 10
    # glibc defaults: every malloc is a fresh mmap whose 16k pages all fault on first touch
    assert _page_faults("0") >= 5 * pages * 0.9


def test_opt_out_is_respected(monkeypatch):
    from facekd.allocator import tune_allocator

    monkeypatch.setenv("FACEKD_MALLOC_TUNING", "0")
    assert tune_allocator() is False
