"""The glibc thresholds that keep the bulk assets' freed arrays in the process."""

import platform

import pytest

from tis_pipeline.pg import memory


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's; other C libraries are left alone"
)
def test_glibc_accepts_both_thresholds():
    # mallopt answers 0 for an option or value it refuses; the function is True only when both were taken
    memory.retain_freed_memory.cache_clear()
    assert memory.retain_freed_memory() is True
