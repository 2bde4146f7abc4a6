"""Freed host memory goes back to the operating system, and after big compiles automatically."""
import ctypes
import ctypes.util
import os

import jax
import jax.numpy as jnp
import pytest

from free_jax import host_memory

needs_trim = pytest.mark.skipif(host_memory._malloc_trim() is None,
                                reason="the C library has no malloc_trim (not glibc): nothing to release")


def resident_bytes() -> int:
    """The process's resident set size now (Linux ``/proc``; malloc_trim means glibc, so Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def listener_off_afterwards():
    yield
    host_memory.release_after_compiles(float("inf"))   # registered for good: make it never fire


@needs_trim
def test_release_returns_freed_heap_pages_to_the_os():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    block, count = 96 * 1024, 2048          # below glibc's mmap threshold: from the heap, 192 MiB
    # Every other block stays in use: the freed ones cannot merge with each other or into the
    # heap's top (which free() itself would give back).
    blocks = [libc.malloc(block) for _ in range(2 * count)]
    for address in blocks:
        ctypes.memset(address, 1, block)     # resident
    for address in blocks[::2]:
        libc.free(address)
    before = resident_bytes()
    assert host_memory.release_freed_memory()
    after = resident_bytes()
    for address in blocks[1::2]:
        libc.free(address)
    assert before - after > 0.75 * block * count, (before, after)


@needs_trim
def test_a_compile_over_the_threshold_releases_before_the_first_run(listener_off_afterwards, monkeypatch):
    monkeypatch.delenv(host_memory.ENV_VAR, raising=False)
    assert host_memory.release_after_compiles(min_seconds=0.0)
    assert host_memory.release_after_compiles(min_seconds=0.0)   # again: still one listener
    x = jnp.arange(7.0).block_until_ready()
    start = host_memory.releases["count"]
    jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)(x).block_until_ready()
    # One compile, one release (a second listener would have released twice).
    assert host_memory.releases["count"] == start + 1

    host_memory.release_after_compiles(min_seconds=1e9)
    start = host_memory.releases["count"]
    jax.jit(lambda x: jnp.cos(x) * 5.0 - 2.0)(x).block_until_ready()
    assert host_memory.releases["count"] == start


@needs_trim
def test_turning_it_off_stops_an_earlier_listener(listener_off_afterwards, monkeypatch):
    monkeypatch.delenv(host_memory.ENV_VAR, raising=False)
    assert host_memory.release_after_compiles(min_seconds=0.0)
    monkeypatch.setenv(host_memory.ENV_VAR, "off")
    assert not host_memory.release_after_compiles(min_seconds=0.0)
    x = jnp.arange(5.0).block_until_ready()
    start = host_memory.releases["count"]
    jax.jit(lambda x: jnp.tanh(x) * 7.0)(x).block_until_ready()
    assert host_memory.releases["count"] == start


def test_it_can_be_turned_off_and_rejects_a_negative_threshold(listener_off_afterwards, monkeypatch):
    monkeypatch.setenv(host_memory.ENV_VAR, "off")
    assert not host_memory.release_after_compiles()
    with pytest.raises(ValueError, match="min_seconds"):
        host_memory.release_after_compiles(-1.0)
