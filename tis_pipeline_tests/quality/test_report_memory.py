"""A report kept after its rows are gone holds none of them.

Steps over many pieces (the ingest's judging, the Great Expectations step) keep one report per piece until
they merge them; a report that still referenced its piece's columns (a zero-row sample sliced from the
piece, a copy-on-write concat) made those steps hold the whole range's rows by the end (+2 GB at 500 symbols
x 31 days).
"""

from __future__ import annotations

import gc
import tracemalloc

import pandas as pd

from tis_pipeline.market_data import synthetic
from tis_pipeline.market_data.validate import values_beyond_scale
from tis_pipeline.quality.evaluate import evaluate_frame
from tis_pipeline.quality.report import merge_reports
from tis_pipeline.quality.rules import SCALE_LOSS_COLUMN

DAY = pd.Timestamp("2024-01-08", tz="UTC")


def _piece(symbols: list[str]) -> pd.DataFrame:
    frame = synthetic.bars(DAY, DAY + pd.Timedelta(days=1), symbols)
    return frame.assign(**{SCALE_LOSS_COLUMN: values_beyond_scale(frame)})


def test_merged_reports_hold_none_of_their_pieces_rows():
    symbols = [f"S{i:03d}" for i in range(120)]
    # the caches a first call fills (the source's per-symbol random walks, the registry's evaluators) before
    # counting, so that what is counted is what the reports hold
    evaluate_frame(_piece(symbols), "market_data_1m")
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        pieces = [_piece(symbols[:60]), _piece(symbols[60:])]
        rows_bytes = tracemalloc.get_traced_memory()[0] - before
        one = [merge_reports([evaluate_frame(p, "market_data_1m")]) for p in pieces]
        merged = merge_reports(one)
        rows = sum(len(p) for p in pieces)
        del pieces
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert rows > 160_000 and rows_bytes > 8_000_000  # the pieces' numeric columns: ~9.6 MB
    assert merged.rows == rows and all(r.frame is None for r in [*one, merged])
    # every rule's verdict is there (some fail on synthetic bars: gaps and jumps), the rows are not
    assert sum(not r.passed for r in merged.results) >= 1
    assert held < rows_bytes / 10, (held, rows_bytes)  # before: all of it (10.1 of 9.7 MB)


def _frames_of_at_least(rows: int) -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, pd.DataFrame) and len(o) >= rows)


def test_great_expectations_keeps_no_judged_rows_after_a_judgement(tmp_path):
    """GX's execution engine (the datasource's, kept for the process) caches the last batch it validated; the
    judged rows with their derived columns would stay alive through every later step of the run."""
    from tis_pipeline.quality import ge

    symbols = [f"S{i:03d}" for i in range(40)]
    piece = _piece(symbols)
    rows = len(piece)
    report = ge.judge(evaluate_frame(piece, "market_data_1m"), root=tmp_path)
    assert report.engine == "great_expectations" and report.rows == rows > 50_000
    assert any(r.unexpected_count for r in report.results)  # GX judged them: synthetic bars have gaps
    del piece, report
    gc.collect()
    assert _frames_of_at_least(rows) == 0
    checked = ge.validate_frame(_piece(symbols), "market_data_1m")  # the other way in: the same
    assert checked.rows == rows
    del checked
    gc.collect()
    assert _frames_of_at_least(rows) == 0
