"""The ingest keeps a piece (a day, or some whole symbols of a day) in memory, not the window nor the day: its
report, facts and tables equal those of the window's rows judged together (the way it worked before, computed
here), the share of bad rows is judged over each whole day, and a failure mid-window or mid-day leaves the
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
from tis_pipeline.market_data.sources import BarSource, SourceRead
from tis_pipeline.market_data.store import read_bars, symbol_pieces
from tis_pipeline.market_data.validate import (
    ENFORCED_RULES,
    QuarantineShareExceeded,
    Validated,
    validate_bars,
    values_beyond_scale,
)
from tis_pipeline.pg.day_partitions import DayBuilds, discard
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


# a day in pieces of whole symbols: the quarantined rows (BBB on day 0, DDD's copy on day 2) and the jump
# (CCC on day 1) are in later pieces of their days
SYMBOL_PIECES = [["AAA"], ["BBB", "CCC"], ["DDD", "EEE"]]


def _pieces(frames: Iterator[pd.DataFrame], layout: str) -> Iterator[SourceRead]:
    """Each day's frame as one piece (``days``) or cut into ``SYMBOL_PIECES`` (``symbols``, the day's end on
    its last), as a source hands them over."""
    for frame in frames:
        if layout == "days":
            yield SourceRead(frame=frame, symbols=list(SYMBOLS))
            continue
        for k, group in enumerate(SYMBOL_PIECES):
            part = frame[frame["symbol"].isin(group)].reset_index(drop=True)
            yield SourceRead(frame=part, symbols=list(SYMBOLS), ends_days=k == len(SYMBOL_PIECES) - 1)


def _reads(days: int = DAYS, broken_day: int | None = None, layout: str = "days") -> Iterator[SourceRead]:
    def frames() -> Iterator[pd.DataFrame]:
        for i in range(days):
            if i == broken_day:
                raise RuntimeError(f"the source broke on day {i}")
            yield _day_frame(i)

    return _pieces(frames(), layout)


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


@pytest.mark.parametrize("layout", ["days", "symbols"])
def test_the_window_in_pieces_gives_the_whole_windows_report_facts_and_tables(
    migrated_database_url, piece_rows, spill_dir, layout
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
    pieces = list(_reads(layout=layout))
    assert len(pieces) == DAYS * (1 if layout == "days" else len(SYMBOL_PIECES))
    ingested = ingest.build_window(engine(url), iter(pieces), START, END, 0.05)
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


def _damaged_day(i: int) -> pd.DataFrame:
    """Day ``i`` of another seed (other rows); of the third day a tenth is bad."""
    frame = _day_frame(i, seed=8)
    if i == 2:
        frame.loc[frame.index[::10], "high"] = -1.0
    return frame


def _share_failure(frame: pd.DataFrame, limit: float = 0.05) -> str:
    """The failure of a day's rows validated at once (the whole-day reference), by the rule written out here
    apart from the ingest's: a UTC day whose quarantined rows are more than ``limit`` of all its rows (clean
    and quarantined) fails, and the message names each such day with its share, the rules broken and the
    first bad rows."""
    checked = validate_bars(normalise_bars(frame), partition_date=START)
    per_day = pd.DataFrame(
        {
            "clean": checked.clean["timestamp"].dt.tz_convert("UTC").dt.date.value_counts(),
            "bad": checked.quarantine["partition_date"].value_counts(),
        }
    ).fillna(0)
    share = (per_day["bad"] / (per_day["clean"] + per_day["bad"])).sort_index()
    over = share[share > limit]
    assert len(over) == 1  # the reference is one day, over the limit
    days = ", ".join(f"{day}: {s:.1%}" for day, s in over.items())
    first_rows = checked.quarantine.head(5)[["source_file", "source_line", "rule"]].to_dict("records")
    return (
        f"1 partition day(s) have more than {limit:.0%} bad rows ({days}); nothing was written. "
        f"Rules broken: {checked.counts}. First rows: {first_rows}"
    )


@pytest.mark.parametrize(
    ("layout", "failure"),
    [
        ("days", "source"),
        ("days", "quarantine_share"),
        ("symbols", "source"),
        ("symbols", "source_mid_day"),
        ("symbols", "quarantine_share"),
    ],
)
def test_a_failure_mid_window_leaves_the_tables_as_they_were(
    migrated_database_url, spill_dir, layout, failure
):
    url = migrated_database_url
    first = ingest.build_window(engine(url), _reads(), START, END, 0.05)
    ingest.write_window(engine(url), first, START, END)
    before = _digest(url)
    assert before[0][0] > 0 and before[1][0] == 2 and before[2] == 0

    def broken_mid_day() -> Iterator[SourceRead]:  # day 0 whole, then the first piece of day 1
        for k, read in enumerate(_reads(layout=layout)):
            if k == len(SYMBOL_PIECES) + 1:
                raise RuntimeError("the source broke in the middle of day 1")
            yield read

    if failure == "source":
        with pytest.raises(RuntimeError, match="broke on day 2"):
            ingest.build_window(engine(url), _reads(broken_day=2, layout=layout), START, END, 0.05)
    elif failure == "source_mid_day":
        with pytest.raises(RuntimeError, match="middle of day 1"):
            ingest.build_window(engine(url), broken_mid_day(), START, END, 0.05)
    else:
        damaged = _pieces((_damaged_day(i) for i in range(DAYS)), layout)
        with pytest.raises(QuarantineShareExceeded, match="2024-05-08") as failed:
            ingest.build_window(engine(url), damaged, START, END, 0.05)
        # the day's share, rules and first rows as when the day's rows were validated at once
        assert failed.value.description == _share_failure(_damaged_day(2))
    assert _digest(url) == before  # the days built (or being built) before the failure were dropped
    assert list(spill_dir.iterdir()) == []


def test_the_share_of_bad_rows_is_judged_over_the_whole_day(migrated_database_url, spill_dir):
    """A piece of a day can be worse than the limit while its day is not (written, its bad rows quarantined),
    and a day over the limit fails as a whole, once its last piece is in, with the whole day's figures."""
    url = migrated_database_url
    # day 1: a fifth of AAA's rows bad (the first piece: 20 % of it, ~4 % of the day)
    day_1 = _day_frame(1)
    aaa = day_1.index[day_1["symbol"] == "AAA"]
    day_1.loc[aaa[::5], "low"] = -1.0
    frames = [_day_frame(0), day_1, _day_frame(2)]
    [piece, *_] = _pieces(iter([day_1]), "symbols")
    assert validate_bars(normalise_bars(piece.frame), partition_date=START).counts[
        "ck_market_data_1m_prices_positive"
    ] > 0.05 * len(piece.frame)
    ingested = ingest.build_window(engine(url), _pieces(iter(frames), "symbols"), START, END, 0.05)
    try:
        bad = len(aaa[::5])
        assert bad < 0.05 * len(day_1)
        assert ingested.counts == {
            "ck_market_data_1m_prices_positive": bad,
            "ck_market_data_1m_high_bounds": 1,
            "market_data_1m_key_unique": 1,
        }
    finally:
        ingest.write_window(engine(url), ingested, START, END)
    assert _digest(url)[1][0] == bad + 2

    # the same day with 7 % of its rows bad, a few in each piece: judged on the whole day
    day_1 = _day_frame(1)
    day_1.loc[day_1.index[::14], "low"] = -1.0
    frames = [_day_frame(0), day_1, _day_frame(2)]
    before = _digest(url)
    handed = []

    def counted() -> Iterator[SourceRead]:
        for read in _pieces(iter(frames), "symbols"):
            handed.append(read)
            yield read

    with pytest.raises(QuarantineShareExceeded) as failed:
        ingest.build_window(engine(url), counted(), START, END, 0.05)
    assert failed.value.description == _share_failure(day_1)
    assert "2024-05-07: 7.2%" in failed.value.description
    # the day failed when its last piece was in (the next piece may have been read ahead), not before
    assert 2 * len(SYMBOL_PIECES) <= len(handed) <= 2 * len(SYMBOL_PIECES) + 1
    assert _digest(url) == before


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


def test_the_synthetic_source_cuts_each_day_into_pieces_of_whole_symbols():
    """Pieces of about ``piece_bars`` bars of whole symbols as the ingest normalises them (two names of one
    symbol stay together), the last of each day marked; normalised one after the other they are the day's
    rows read at once, normalised."""
    symbols = ["ccc", "AAA", "bbb", " aaa", "BBB", "DDD", "EEE"]
    source = BarSource(source="synthetic", symbols=symbols, seed=3, piece_bars=2 * 1440)
    first, end = pd.Timestamp("2024-06-01", tz="UTC"), pd.Timestamp("2024-06-03", tz="UTC")
    pieces = list(source.read_pieces(first, end))
    names = [sorted(set(p.frame["symbol"])) for p in pieces]
    day = [["AAA", " aaa"], ["BBB", "bbb"], ["DDD", "ccc"], ["EEE"]]
    assert names == [sorted(n) for n in day] * 2
    assert [p.ends_days for p in pieces] == [False, False, False, True] * 2
    assert all(p.symbols == symbols for p in pieces)
    for d in range(2):
        start = first + pd.Timedelta(days=d)
        whole = normalise_bars(source.read(start, start + pd.Timedelta(days=1)).frame)
        joined = pd.concat([normalise_bars(p.frame) for p in pieces[4 * d : 4 * d + 4]], ignore_index=True)
        pd.testing.assert_frame_equal(joined, whole)
    # one piece a day when the day fits in one
    assert [p.ends_days for p in BarSource(source="synthetic", symbols=symbols).read_pieces(first, end)] == [
        True,
        True,
    ]


def test_the_daily_walk_goes_on_from_where_it_was_asked_and_equals_the_walk_drawn_whole(monkeypatch):
    """The opening prices from the walk's checkpoints, days asked in any order (and past its end), equal those
    of the whole walk drawn at once and summed (as the source made them before)."""
    monkeypatch.setattr(synthetic, "_WALKS", type(synthetic._WALKS)())
    monkeypatch.setattr(synthetic, "_WALKS_KEPT", 3)  # fewer than the symbols: checkpoints are dropped too
    days = [3294, 3295, 3300, 10, 0, 3301, 21959, -4, 21960, 25000, 3296, 1]
    for symbol in ["AAA", "BBB", "S00042", "eth", "ZZZ"]:
        base = float(np.exp(synthetic._stream(5, symbol, 0, 0).uniform(np.log(5.0), np.log(5_000.0))))
        steps = synthetic._stream(5, symbol, 0, 1).standard_t(5, size=synthetic._MAX_DAYS) * 0.012
        walk = np.concatenate([[0.0], np.cumsum(steps)])
        for day in days:
            want = round(base * float(np.exp(walk[min(max(day, 0), synthetic._MAX_DAYS)])), 4)
            assert synthetic._opening_price(5, symbol, day) == want, (symbol, day)
    assert len(synthetic._WALKS) == 3


def test_a_day_built_from_parts_equals_the_day_built_at_once(migrated_database_url):
    """``DayBuilds`` streams a day given in parts to one build (rows in the order given); a day that came
    whole is not taken again, nor one after another day came."""
    url = migrated_database_url
    day = START
    bars = synthetic.day_bars(day, SYMBOLS, seed=11)
    bars["timestamp"] = bars["timestamp"].astype("datetime64[us, UTC]")
    builds = DayBuilds(engine(url), START, END)
    try:
        for k, group in enumerate(SYMBOL_PIECES):
            builds.add(bars[bars["symbol"].isin(group)], whole=k == len(SYMBOL_PIECES) - 1)
        with pytest.raises(ValueError, match="2024-05-06 came in two parts"):
            builds.add(bars[bars["symbol"] == "AAA"])
        built = builds.finish()
    except BaseException:
        builds.abandon()
        raise
    assert built.written == len(bars) and len(built.jobs) == 1
    [(_, _, staging)] = built.jobs
    with engine(url).connect() as conn:
        stored = pd.DataFrame(
            conn.execute(sa.text(f'SELECT symbol, "timestamp", close::float8 FROM "{staging}"')).all()
        )
    discard(engine(url), built)
    assert stored["symbol"].tolist() == bars["symbol"].tolist()  # in the order given, part after part
    assert (stored["timestamp"] == bars["timestamp"].to_numpy()).all()
    np.testing.assert_allclose(stored["close"], bars["close"], rtol=0, atol=1e-8)
    assert _digest(url)[2] == 0

    # days in order, a day in parts: the next day ends the one before
    builds = DayBuilds(engine(url), START, END)
    two = synthetic.bars(START, START + pd.Timedelta(days=2), SYMBOLS, seed=11)
    first_day = two["timestamp"] < START + pd.Timedelta(days=1)
    try:
        builds.add(two[first_day & (two["symbol"] < "CCC")], whole=False)
        builds.add(two[first_day & (two["symbol"] >= "CCC")], whole=False)
        builds.add(two[~first_day], whole=False)
        with pytest.raises(ValueError, match="2024-05-06 came in two parts"):
            builds.add(two[first_day], whole=False)
        built = builds.finish()
    except BaseException:
        builds.abandon()
        raise
    assert built.written == len(two) and [d for d, _, _ in built.jobs] == [
        START,
        START + pd.Timedelta(days=1),
    ]
    discard(engine(url), built)
    assert _digest(url)[2] == 0


def test_a_build_that_fails_mid_day_raises_its_error_and_leaves_no_table(migrated_database_url):
    """A part the build cannot write (here a column missing) fails the build: the error reaches the caller
    (when it hands the next part, or at the latest when it finishes) and no table is left; a caller that fails
    mid-day makes its open build give up instead of waiting."""
    url = migrated_database_url
    bars = synthetic.day_bars(START, SYMBOLS, seed=11)
    builds = DayBuilds(engine(url), START, END)
    with pytest.raises(KeyError, match="volume"):
        try:
            builds.add(bars[bars["symbol"] == "AAA"].drop(columns="volume"), whole=False)
            for _ in range(20):  # parts until the failed build is seen
                builds.add(bars[bars["symbol"] == "AAA"], whole=False)
            builds.finish()
        except BaseException:
            builds.abandon()
            raise
    assert _digest(url)[2] == 0

    builds = DayBuilds(engine(url), START, END)
    builds.add(bars[bars["symbol"] == "AAA"], whole=False)
    builds.abandon()  # mid-day: the build's COPY is abandoned, the table never committed
    assert _digest(url)[2] == 0
