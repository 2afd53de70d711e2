"""The file sensor: which runs it requests as bar files appear, change and go away, through the real
readers."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from tis_pipeline.definitions import defs
from tis_pipeline.market_data.partitions import RANGE_END, RANGE_START
from tis_pipeline.ops.sensors import changed_days, market_data_files_sensor


def _write_bars(path: Path, first: str, days: int) -> None:
    """A CSV of 1-minute bars, 09:30-09:59 UTC on each of ``days`` days from ``first``; the symbol is the
    stem."""
    stamps = [
        pd.Timestamp(first) + pd.Timedelta(days=d, hours=9, minutes=30 + m)
        for d in range(days)
        for m in range(30)
    ]
    lines = ["timestamp,open,high,low,close,volume"]
    lines += [f"{t.isoformat()}Z,10.0,10.5,9.5,10.25,{100 + i}" for i, t in enumerate(stamps)]
    path.write_text("\n".join(lines) + "\n")


def _ranges(result) -> list[tuple[str, str]]:
    assert isinstance(result, list), result
    return sorted((r.tags[RANGE_START], r.tags[RANGE_END]) for r in result)


@pytest.fixture
def watched(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "bars"
    root.mkdir()
    monkeypatch.setenv("TIS_MARKET_SOURCE", "csv")
    monkeypatch.setenv("TIS_MARKET_DATA_DIR", str(root))
    monkeypatch.setenv("TIS_PARTITION_START", "2024-01-01")
    return root


def test_files_that_appear_change_or_go_away_request_their_days(watched: Path) -> None:
    _write_bars(watched / "AAA.csv", "2024-03-01", 2)
    context = dg.build_sensor_context()

    first = market_data_files_sensor(context)  # the first look records the files and asks for nothing
    assert isinstance(first, dg.SkipReason) and "1 1-minute file(s)" in first.skip_message
    assert isinstance(market_data_files_sensor(context), dg.SkipReason)  # nothing changed

    _write_bars(watched / "BBB.csv", "2024-03-05", 2)
    # a tick retried from the same cursor asks for the same runs (same run keys: Dagster launches them once)
    cursor = context.cursor
    retried = market_data_files_sensor(dg.build_sensor_context(cursor=cursor))
    assert [r.run_key for r in retried] == [
        r.run_key for r in market_data_files_sensor(dg.build_sensor_context(cursor=cursor))
    ]
    (watched / "hourly").mkdir()
    hourly = pd.date_range("2024-04-01", periods=48, freq="h", tz="UTC")  # coarser bars are not watched
    (watched / "hourly" / "CCC.csv").write_text(
        "timestamp,open,high,low,close,volume\n"
        + "\n".join(f"{t.isoformat()},1,1,1,1,1" for t in hourly)
        + "\n"
    )
    assert _ranges(market_data_files_sensor(context)) == [("2024-03-05", "2024-03-06")]

    # AAA grows by three days (its old days come again too: one stretch), BBB goes away
    _write_bars(watched / "AAA.csv", "2024-03-01", 5)
    os.utime(watched / "AAA.csv", ns=(1, 1))  # another size and modification time
    (watched / "BBB.csv").unlink()
    assert _ranges(market_data_files_sensor(context)) == [("2024-03-01", "2024-03-06")]
    assert isinstance(market_data_files_sensor(context), dg.SkipReason)


def test_only_days_with_partitions_are_requested(watched: Path) -> None:
    context = dg.build_sensor_context()
    market_data_files_sensor(context)
    _write_bars(watched / "OLD.csv", "2023-12-30", 4)  # two days before the first partition
    assert _ranges(market_data_files_sensor(context)) == [("2024-01-01", "2024-01-02")]
    today = pd.Timestamp.now(tz="UTC").normalize().tz_localize(None)
    _write_bars(watched / "NEW.csv", str(today.date()), 1)  # today's partition does not exist yet
    result = market_data_files_sensor(context)
    assert isinstance(result, dg.SkipReason), result


def test_changed_days_are_the_old_and_new_days_of_the_files_that_changed() -> None:
    before = {"a.csv": [10, 1, "2024-03-01", "2024-03-02"]}
    after = {"a.csv": [20, 2, "2024-03-01", "2024-03-04"], "b.csv": [5, 1, "2024-03-10", "2024-03-10"]}
    assert changed_days(before, after) == {pd.Timestamp(f"2024-03-{d:02d}").date() for d in (1, 2, 3, 4, 10)}
    assert changed_days(after, after) == set()


def test_the_sensor_skips_without_a_directory(monkeypatch) -> None:
    monkeypatch.setenv("TIS_MARKET_SOURCE", "synthetic")
    monkeypatch.delenv("TIS_MARKET_DATA_DIR", raising=False)
    assert isinstance(market_data_files_sensor(dg.build_sensor_context()), dg.SkipReason)


def test_the_sensor_is_in_the_definitions_and_off_by_default() -> None:
    sensor = defs.resolve_sensor_def("market_data_files_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.job_name == "daily_partitioned_job"


def test_a_file_rewritten_with_the_same_size_and_mtime_is_seen_by_its_digest(watched: Path) -> None:
    path = watched / "AAA.csv"
    _write_bars(path, "2024-03-01", 2)
    st = path.stat()
    context = dg.build_sensor_context()
    market_data_files_sensor(context)  # first look
    assert isinstance(market_data_files_sensor(context), dg.SkipReason)  # unchanged: no request, no re-read

    # other bytes, same size, the modification time put back (cp -p, rsync -t, a restore from backup)
    text = path.read_text()
    path.write_text(text.replace("10.25,", "10.35,"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    assert _ranges(market_data_files_sensor(context)) == [("2024-03-01", "2024-03-02")]
    assert isinstance(market_data_files_sensor(context), dg.SkipReason)
