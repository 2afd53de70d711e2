"""The ingest keeps a piece (a day) in memory, not the window: its report, facts and tables equal those of the
window's rows judged together (the way it worked before, computed here), and a failure mid-window leaves the
tables as they were."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tis_pipeline.market_data import ingest, synthetic
from tis_pipeline.market_data.bars import BAR_COLUMNS, normalise_bars
from tis_pipeline.market_data.describe import missing_minutes
from tis_pipeline.market_data.sources import SourceRead
from tis_pipeline.market_data.store import read_bars, symbol_pieces
from tis_pipeline.market_data.validate import (
    ENFORCED_RULES,
    QuarantineShareExceeded,
    Validated,
    validate_bars,
    values_beyond_scale,
)
from tis_pipeline.pg.engine import engine
from tis_pipeline.quality.evaluate import evaluate_frame
from tis_pipeline.quality.report import ValidationReport, merge_reports
from tis_pipeline.quality.rules import SCALE_LOSS_COLUMN
from tis_pipeline.settings import settings

SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE"]
START = pd.Timestamp("2024-05-06", tz="UTC")
DAYS = 3
END = START + pd.Timedelta(days=DAYS)
PIECE_ROWS = 5000  # a symbol has ~4,300 rows over the window: pieces of one or two symbols


def _day_frame(i: int, seed: int = 7) -> pd.DataFrame:
    """Day ``i`` of the window, with what the rules look for: a row with its high below its low (quarantined)
    and a volume beyond numeric(20,8)'s scale (kept, reported) on day 0, a price jump and a gap of 45 minutes
    on day 1, an exact copy of a row (quarantined) on day 2."""
    day = START + pd.Timedelta(days=i)
    frame = synthetic.day_bars(day, SYMBOLS, seed=seed)
    symbol = frame["symbol"]
    if i == 0:
        bad = frame.index[symbol == "BBB"][100]
        frame.loc[bad, "high"] = frame.loc[bad, "low"] * 0.5
        lossy = frame.index[symbol == "EEE"][10]
        frame.loc[lossy, "volume"] = frame.loc[lossy, "volume"] + 1e-9
    if i == 1:
        jump = frame.index[symbol == "CCC"][700]
        frame.loc[jump, ["open", "high", "low", "close"]] *= 1.3
        minute = frame["timestamp"] - day
        gap = (
            (symbol == "AAA")
            & (minute >= pd.Timedelta(hours=5))
            & (minute < pd.Timedelta(hours=5, minutes=45))
        )
        frame = frame[~gap]
    if i == 2:
        frame = pd.concat([frame, frame[symbol == "DDD"].iloc[[5]]])
    return frame.reset_index(drop=True)


def _reads(days: int = DAYS, broken_day: int | None = None) -> Iterator[SourceRead]:
    for i in range(days):
        if i == broken_day:
            raise RuntimeError(f"the source broke on day {i}")
        yield SourceRead(frame=_day_frame(i), symbols=list(SYMBOLS))


def _whole_window() -> tuple[Validated, ValidationReport, dict]:
    """The window as the ingest took it before it streamed: every piece's rows joined, judged in pieces of
    whole symbols of the joined frame, the facts from ``missing_minutes``' groupby of all the clean rows."""
    checked = Validated.concat(
        [validate_bars(normalise_bars(r.frame), partition_date=START) for r in _reads()]
    )
    clean = checked.clean
    codes, uniques = pd.factorize(clean["symbol"], sort=True)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(uniques))
    bounds = np.r_[0, np.cumsum(counts)]
    reports = []
    for low, below in symbol_pieces(list(zip(uniques, counts.tolist(), strict=True)), PIECE_ROWS):
        first = 0 if low is None else int(np.searchsorted(uniques, low))
        last = len(uniques) if below is None else int(np.searchsorted(uniques, below))
        part = clean.iloc[order[bounds[first] : bounds[last]]]
        judged = part.assign(**{SCALE_LOSS_COLUMN: values_beyond_scale(part)})
        reports.append(merge_reports([evaluate_frame(judged, "market_data_1m", enforced=ENFORCED_RULES)]))
    gaps = missing_minutes(clean).groupby("symbol", observed=True)["missing"].sum()
    facts = {
        "rows": len(clean),
        "symbols": sorted(clean["symbol"].astype(str).unique().tolist()),
        "first_timestamp": clean["timestamp"].min().isoformat(),
        "last_timestamp": clean["timestamp"].max().isoformat(),
        "missing_by_symbol": {str(k): int(v) for k, v in gaps.items()},
    }
    return checked, merge_reports(reports), facts


def assert_same_report(got: ValidationReport, want: ValidationReport) -> None:
    assert (got.table, got.rows, got.first_timestamp, got.last_timestamp) == (
        want.table,
        want.rows,
        want.first_timestamp,
        want.last_timestamp,
    )
    assert [r.name for r in got.results] == [r.name for r in want.results]
    for g, w in zip(got.results, want.results, strict=True):
        assert (g.passed, g.unexpected_count, g.element_count, g.skipped) == (
            w.passed,
            w.unexpected_count,
            w.element_count,
            w.skipped,
        ), w.name
        pd.testing.assert_frame_equal(g.failing_rows, w.failing_rows, obj=w.name)
        if w.by_symbol_day is None:
            assert g.by_symbol_day is None, w.name
        else:
            pd.testing.assert_frame_equal(g.by_symbol_day, w.by_symbol_day, obj=w.name)
        # the not-in-the-future rule shows its clock, which moved on between the two judgements
        clock = "latest_allowed"
        assert (clock in g.details) == (clock in w.details), w.name
        assert {k: v for k, v in g.details.items() if k != clock} == {
            k: v for k, v in w.details.items() if k != clock
        }, w.name


def _digest(url: str) -> tuple:
    with engine(url).connect() as conn:
        bars = conn.execute(
            sa.text(
                "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY symbol, \"timestamp\"), '')) "
                "FROM market_data_1m t"
            )
        ).one()
        row = "concat_ws(',', partition_date, source_file, source_line, symbol, timestamp, raw_values, rule)"
        quarantine = conn.execute(
            sa.text(
                f"SELECT count(*), md5(coalesce(string_agg({row}, '|' ORDER BY {row}), '')) "
                "FROM market_data_quarantine"
            )
        ).one()
        scratch = conn.execute(
            sa.text(r"SELECT count(*) FROM pg_class WHERE relname ~ '^market_data_1m_p[0-9]{8}_[0-9a-f]{8}'")
        ).scalar_one()
    return tuple(bars), tuple(quarantine), scratch


@pytest.fixture
def piece_rows(monkeypatch):
    monkeypatch.setenv("TIS_CHECK_PIECE_ROWS", str(PIECE_ROWS))
    assert settings().check_piece_rows == PIECE_ROWS


@pytest.fixture
def spill_dir(tmp_path, monkeypatch):
    """The ingest's temporary directories go under ``tmp_path``, to be seen removed."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_the_window_in_day_pieces_gives_the_whole_windows_report_facts_and_tables(
    migrated_database_url, piece_rows, spill_dir
):
    want_checked, want_report, want_facts = _whole_window()
    assert want_checked.enforced == ENFORCED_RULES  # days apart in time: the key rule holds across them
    # the window has what the comparison is about
    assert want_checked.counts == {"ck_market_data_1m_high_bounds": 1, "market_data_1m_key_unique": 1}
    failed = {r.name for r in want_report.results if not r.passed}
    assert {"market_data_1m_no_gaps", "market_data_1m_no_price_jumps", "market_data_1m_values_fit_scale"} <= (
        failed
    )
    assert len(symbol_pieces([(s, 4300) for s in SYMBOLS], PIECE_ROWS)) == len(SYMBOLS)

    url = migrated_database_url
    ingested = ingest.build_window(engine(url), _reads(), START, END, 0.05)
    assert list(spill_dir.iterdir()) == []  # the clean rows on disk are gone once judged
    assert_same_report(ingested.report, want_report)
    assert ingested.facts == want_facts
    assert list(ingested.facts["missing_by_symbol"]) == SYMBOLS
    assert ingested.facts["missing_by_symbol"]["AAA"] >= 45
    assert ingested.counts == want_checked.counts
    pd.testing.assert_frame_equal(ingested.quarantine, want_checked.quarantine)
    pd.testing.assert_frame_equal(ingested.preview, want_checked.clean.head(ingest.PREVIEW_ROWS))
    assert ingested.rows_without_volume == int(want_checked.clean["volume_missing"].sum())
    assert ingested.symbols == SYMBOLS

    replaced, written, quarantined = ingest.write_window(engine(url), ingested, START, END)
    assert (replaced, written, quarantined) == (0, len(want_checked.clean), 2)
    with engine(url).connect() as conn:
        stored = read_bars(conn, "market_data_1m", START, END)
    want = want_checked.clean[BAR_COLUMNS].sort_values(["symbol", "timestamp"], ignore_index=True)
    pd.testing.assert_frame_equal(
        stored[["symbol", "timestamp"]], want[["symbol", "timestamp"]], check_dtype=False
    )
    # numeric(20,8) keeps 8 decimals: the volume given 1e-9 more reads back without it
    values = ["open", "high", "low", "close", "volume"]
    np.testing.assert_allclose(stored[values].to_numpy(), want[values].to_numpy(), rtol=0, atol=1e-8)
    assert _digest(url)[2] == 0


@pytest.mark.parametrize("failure", ["source", "quarantine_share"])
def test_a_failure_mid_window_leaves_the_tables_as_they_were(migrated_database_url, spill_dir, failure):
    url = migrated_database_url
    first = ingest.build_window(engine(url), _reads(), START, END, 0.05)
    ingest.write_window(engine(url), first, START, END)
    before = _digest(url)
    assert before[0][0] > 0 and before[1][0] == 2 and before[2] == 0

    def damaged():  # another seed (other rows), and a third day of which a tenth is bad
        for i in range(DAYS):
            frame = _day_frame(i, seed=8)
            if i == 2:
                frame.loc[frame.index[::10], "high"] = -1.0
            yield SourceRead(frame=frame, symbols=list(SYMBOLS))

    if failure == "source":
        with pytest.raises(RuntimeError, match="broke on day 2"):
            ingest.build_window(engine(url), _reads(broken_day=2), START, END, 0.05)
    else:
        with pytest.raises(QuarantineShareExceeded, match="2024-05-08"):
            ingest.build_window(engine(url), damaged(), START, END, 0.05)
    assert _digest(url) == before  # the two days built before the failure were dropped
    assert list(spill_dir.iterdir()) == []


def test_spilled_rows_read_back_as_the_rows_given_by_symbol(tmp_path):
    """Pieces not grouped by symbol (shuffled) come back with each symbol's rows in the order they came,
    dtypes and values bit for bit; a piece of no rows still gives the columns."""
    pieces = [normalise_bars(_day_frame(i)).sample(frac=1.0, random_state=i) for i in range(DAYS)]
    pieces = [validate_bars(p, partition_date=START).clean for p in pieces]
    joined = pd.concat(pieces, ignore_index=True)
    spilled = ingest.SpilledRows(tmp_path)
    for piece in [*pieces, pieces[0].iloc[:0]]:
        spilled.add(piece)
    assert spilled.symbol_counts() == sorted(joined["symbol"].value_counts().items())
    for low, below in [(None, None), ("BBB", "DDD"), (None, "AAB"), ("DDD", None), ("ZZZ", None)]:
        keep = joined["symbol"].ge(low or "") & (joined["symbol"].lt(below) if below else True)
        part = joined[keep]
        want = part.iloc[np.argsort(pd.factorize(part["symbol"], sort=True)[0], kind="stable")]
        pd.testing.assert_frame_equal(spilled.read(low, below), want.reset_index(drop=True))
