"""Per-bar rows for the database: the contributions' JSON text built in Python is the jsonb PostgreSQL
builds."""

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from bench.dsi_logic import make_bars
from tis_pipeline.dsi import frames
from tis_pipeline.dsi.logic import score as logic
from tis_pipeline.dsi.logic.config import FAMILIES
from tis_pipeline.pg.copy import copy_frame
from tis_pipeline.pg.engine import engine, raw_connection

pytestmark = pytest.mark.pg

EDGES = [
    0.0,
    -0.0,
    0.5,
    -0.5,
    0.0001,
    -0.0001,
    0.1,
    -0.1,
    0.12,
    0.123,
    0.1234,
    1.0,
    -1.0,
    12.3456,
    -0.045,
    0.3,
    0.7,
    0.9999,
    99.99,
    1234567.8901,
]


def _built_in_sql(alias: str) -> str:
    """What the bars held before: jsonb_build_object over the 15 float8 contributions (main's UPDATE)."""
    parts, i = [], 0
    for family, names in FAMILIES.items():
        parts.append(
            f"'{family}', jsonb_build_array({', '.join(f'{alias}.c{i + k}' for k in range(len(names)))})"
        )
        i += len(names)
    return f"jsonb_build_object({', '.join(parts)})"


def _compare(url: str, values: np.ndarray) -> tuple[int, int, list]:
    """(rows, rows whose jsonb text differs, a few differing pairs) for the float8 path vs the text path."""
    frame = pd.DataFrame({f"c{i}": values[:, i] for i in range(logic.N_EXPERTS)})
    frame.insert(0, "n", np.arange(len(frame)))
    frame["j"] = pd.Series(pd.arrays.ArrowExtensionArray(frames.contributions_json(values)))
    with engine(url).begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TEMP TABLE t (n int, "
                + ", ".join(f"c{i} float8" for i in range(logic.N_EXPERTS))
                + ", j jsonb) ON COMMIT DROP"
            )
        )
        copy_frame(raw_connection(conn), "t", frame)
        rows, differing = conn.execute(
            sa.text(
                f"SELECT count(*), count(*) FILTER (WHERE ({_built_in_sql('t')})::text "
                "IS DISTINCT FROM j::text) FROM t"
            )
        ).one()
        sample = conn.execute(
            sa.text(
                f"SELECT ({_built_in_sql('t')})::text, j::text FROM t "
                f"WHERE ({_built_in_sql('t')})::text IS DISTINCT FROM j::text LIMIT 3"
            )
        ).all()
    return rows, differing, sample


def test_contributions_text_is_the_jsonb_postgres_builds_from_the_floats(migrated_database_url):
    bars = make_bars(2 * 600, 4, seed=11)
    scores, _ = logic.score_bars(bars, None, logic.DsiConfig())
    values = frames.contributions(scores)
    assert np.count_nonzero(values) > len(values)  # not a table of zeros
    rows, differing, sample = _compare(migrated_database_url, values)
    assert rows == len(values) and differing == 0, sample


def test_contributions_text_on_edge_values(migrated_database_url):
    rng = np.random.default_rng(3)
    grid = np.round(
        rng.uniform(-1, 1, (2000, logic.N_EXPERTS)), 4
    )  # every 4-dp shape: 0.1, 0.12, 0.123, 0.1234
    grid[: len(EDGES), 0] = EDGES
    grid[: len(EDGES), 7] = [-e for e in EDGES]
    rows, differing, sample = _compare(migrated_database_url, grid)
    assert rows == len(grid) and differing == 0, sample


def test_contributions_text_of_nan_and_infinities_matches_postgres(migrated_database_url):
    values = np.zeros((3, logic.N_EXPERTS))
    values[:, 2] = [np.nan, np.inf, -np.inf]
    rows, differing, sample = _compare(migrated_database_url, values)
    assert rows == 3 and differing == 0, sample


def test_bar_updates_reads_only_its_declared_inputs():
    bars = make_bars(300, 2, seed=5)
    scores, _ = logic.score_bars(bars, None, logic.DsiConfig())
    pd.testing.assert_frame_equal(
        frames.bar_updates(scores), frames.bar_updates(scores[frames.BAR_UPDATE_INPUTS])
    )
    assert list(frames.bar_updates(scores).columns) == frames.BAR_UPDATE_COLUMNS
