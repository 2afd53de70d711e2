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


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_hands_freed_heap_back_that_stays_with_the_process_otherwise():
    memory.retain_freed_memory()  # blocks up to 32 MB from the heap, 256 MB of free heap kept
    block, count = 4 * 1024 * 1024, 64  # 256 MiB in blocks under the mmap threshold: from the heap
    blocks = [b"x" * block for _ in range(count)]  # written, so their pages are resident
    pin = b"y" * block  # above them, so their freed space is not the heap's top (which free() trims itself)
    before_free = _rss_bytes()
    del blocks
    after_free = _rss_bytes()
    assert memory.release_freed_memory() is True
    after_release = _rss_bytes()
    # free() kept the pages (the blocks were not at the top), release_freed_memory gave them back
    assert before_free - after_free < count * block / 4
    assert after_free - after_release > count * block / 2
    del pin


def test_the_daily_job_releases_the_heap_after_every_step_whatever_its_outcome():
    from tis_pipeline.definitions import defs
    from tis_pipeline.ops.jobs import heap_released_after_failed_step, heap_released_after_step

    job = defs.resolve_job_def("daily_partitioned_job")
    assert {heap_released_after_step, heap_released_after_failed_step} <= set(job.hook_defs)
