"""The allocator tuning applies where the C library is glibc and is a no-op elsewhere."""

import ctypes
import platform

import pytest

from app import allocator

GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.fixture
def no_c_library(monkeypatch):
    def no_library(*_args, **_kwargs):
        raise OSError("no C library here")

    monkeypatch.setattr(ctypes, "CDLL", no_library)


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_tuning_is_applied_on_glibc():
    assert allocator.tune_malloc() is True


def test_tuning_without_a_c_library_changes_nothing_and_says_so(no_c_library):
    assert allocator.tune_malloc() is False


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_trim_hands_memory_back_on_glibc():
    assert allocator.trim() is True


def test_trim_without_a_c_library_says_so(no_c_library):
    assert allocator.trim() is False
