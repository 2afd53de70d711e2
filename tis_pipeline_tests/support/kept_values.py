"""What a DSI run must not change in ``market_data_1m``: values planted before it and read back after it.

The one-step asset (``dsi/test_assets.py``) and the sharded one (``dsi/test_shards.py``) prove the same
promise with these: values its floats cannot prove (a fraction above 2**26, a value with 20 digits), module
columns, and a day whose rows sit in the DEFAULT partition all come out exactly as they were, and every bar
is scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from tis_pipeline.pg.engine import engine

# values a float64 cannot hold exactly: only a copy of the row's own text keeps them
ODD_VALUES = {"volume": "123456789.12345678", "open": "99999999999.99999999", "high": "99999999999.99999999"}
KEPT_COLUMNS = (
    'symbol, "timestamp", open, high, low, close, volume, module_intelligence, module_learning_updates'
)


def _at(day: str, hour: int) -> datetime:
    return (pd.Timestamp(day, tz="UTC") + timedelta(hours=hour)).to_pydatetime()


@dataclass(frozen=True)
class Planted:
    day: str  # 'YYYY-MM-DD', the scored day the values were planted in
    odd_symbol: str  # its 10:00 bar holds ODD_VALUES and module_intelligence {"kept": true}
    default_rows: int  # rows of the next day, copies of the first two hours, in the DEFAULT partition


def plant_values_dsi_does_not_write(url: str, day: str, odd_symbol: str, learning_symbol: str) -> Planted:
    """On ``day`` (already ingested): ``ODD_VALUES`` and a module_intelligence at ``odd_symbol``'s 10:00 bar,
    module_learning_updates at ``learning_symbol``'s 11:00 bar, and the first two hours again on the next
    day, which has no partition of its own, so they sit in the DEFAULT partition."""
    with engine(url).begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE market_data_1m SET volume = :volume, open = :open, high = :high, "
                "module_intelligence = '{\"kept\": true}' "
                'WHERE symbol = :symbol AND "timestamp" = :at'
            ),
            {**ODD_VALUES, "symbol": odd_symbol, "at": _at(day, 10)},
        )
        conn.execute(
            sa.text(
                "UPDATE market_data_1m SET module_learning_updates = '[1, 2]' "
                'WHERE symbol = :symbol AND "timestamp" = :at'
            ),
            {"symbol": learning_symbol, "at": _at(day, 11)},
        )
        conn.execute(
            sa.text(
                'INSERT INTO market_data_1m (symbol, "timestamp", open, high, low, close, volume, '
                "module_intelligence) "
                "SELECT symbol, \"timestamp\" + interval '1 day', open, high, low, close, "
                "volume + 0.00000001, '{\"m\": 1}' FROM market_data_1m "
                'WHERE "timestamp" >= :start AND "timestamp" < :two_hours_later'
            ),
            {"start": _at(day, 0), "two_hours_later": _at(day, 2)},
        )
        default_rows = conn.execute(sa.text("SELECT count(*) FROM ONLY market_data_1m_default")).scalar_one()
    return Planted(day, odd_symbol, default_rows)


def kept_rows(url: str) -> list[tuple]:
    """Every bar's columns DSI does not write, in key order."""
    with engine(url).connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(sa.text(f"SELECT {KEPT_COLUMNS} FROM market_data_1m ORDER BY 1, 2"))
        ]


@dataclass(frozen=True)
class AfterScoring:
    unscored: int  # bars without mx_evidence, mx_confirm or mx_expert_contributions
    in_default: int  # rows left in the DEFAULT partition
    odd: tuple  # (volume, open, module_intelligence->>'kept') of the planted bar, as text


def after_scoring(url: str, planted: Planted) -> AfterScoring:
    with engine(url).connect() as conn:
        unscored = conn.execute(
            sa.text(
                "SELECT count(*) FILTER (WHERE mx_evidence IS NULL OR mx_confirm IS NULL "
                "OR mx_expert_contributions IS NULL) FROM market_data_1m"
            )
        ).scalar_one()
        in_default = conn.execute(sa.text("SELECT count(*) FROM ONLY market_data_1m_default")).scalar_one()
        odd = conn.execute(
            sa.text(
                "SELECT volume::text, open::text, module_intelligence->>'kept' FROM market_data_1m "
                'WHERE symbol = :symbol AND "timestamp" = :at'
            ),
            {"symbol": planted.odd_symbol, "at": _at(planted.day, 10)},
        ).one()
    return AfterScoring(unscored, in_default, tuple(odd))


def assert_kept_and_scored(url: str, planted: Planted, before: list[tuple]) -> None:
    """The promise: the kept columns unchanged row for row, the planted values as they were, every bar
    scored, nothing left in the DEFAULT partition."""
    after = kept_rows(url)
    assert after == before and len(after) > planted.default_rows > 100
    found = after_scoring(url, planted)
    assert found.odd == (ODD_VALUES["volume"], ODD_VALUES["open"], "true")
    assert found.unscored == 0 and found.in_default == 0
