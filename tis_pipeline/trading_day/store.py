"""SQL of the trading day: its inputs (events with evidence, bars, history, the carried population) and the
one-transaction replacement of everything a day range produced.

Table names are fixed in this module, never taken from input; every value is a bound parameter or COPY data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa

from tis_pipeline.pg.copy import copy_frame
from tis_pipeline.pg.copy_binary import PG_EPOCH_US
from tis_pipeline.pg.day_partitions import DAY_VERSION_TABLES, versions_up_to
from tis_pipeline.pg.engine import fetch_column_arrays, fetch_frame, raw_connection
from tis_pipeline.trading_day.ecosystem import common as ecosystem_tables
from tis_pipeline.trading_day.plans import common as plan_tables

# the seed's columns of each table the trading day writes, in the seed's order, as the logic builds them
COLUMNS: Mapping[str, tuple[str, ...]] = {
    "modules": ecosystem_tables.MODULE_COLUMNS,
    "trading_plans": tuple(plan_tables.PLAN_COLUMNS),
    "trading_plan_approvals": tuple(plan_tables.APPROVAL_COLUMNS),
    "module_performance": tuple(plan_tables.PERFORMANCE_COLUMNS),
    "module_messages": ecosystem_tables.MESSAGE_COLUMNS,
    "module_intelligence_sharing": ecosystem_tables.SHARING_COLUMNS,
    "module_replications": ecosystem_tables.REPLICATION_COLUMNS,
    "module_replication_triggers": ecosystem_tables.TRIGGER_COLUMNS,
}
# the columns holding Python dicts/lists, per table, as the logic declares them
JSON_COLUMNS: Mapping[str, tuple[str, ...]] = {**ecosystem_tables.JSON_COLUMNS, **plan_tables.JSON_COLUMNS}
# children before parents: the order rows of a window are deleted in (the reverse is the order they are
# written)
WINDOW_TABLES = (
    "module_replication_triggers",
    "module_replications",
    "module_intelligence_sharing",
    "module_messages",
    "module_performance",
    "trading_plan_approvals",
    "trading_plans",
)


def _plain(value: Any):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# orjson's encoder: the same JSON values as ``json.dumps(value, sort_keys=True, separators=(",", ":"),
# default=_plain)`` ~8 times as fast (a day of thousands of symbols writes a few hundred thousand JSON values:
# ~0.6 s of the trading day at 2,000 symbols with json). Its text differs from json's only in form, never in
# value: exponents unpadded (1e-7, not 1e-07) and non-ASCII characters as UTF-8, not escaped; the columns are
# jsonb, which stores the value. Keys sorted, non-string keys as json writes them, datetimes (pandas'
# Timestamps among them) through ``_plain`` as json did.
_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def to_json(value: Any) -> str | None:
    """Canonical JSON text (sorted keys, no spaces): the same object always gives the same bytes."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return orjson.dumps(value, default=_plain, option=_JSON_OPTIONS).decode()


def to_json_values(values: Any) -> list[str | None]:
    """``to_json`` of each value of a column, as a list (what the COPY frames take)."""
    return [to_json(value) for value in values]


def table_frame(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """``frame``'s columns of ``table`` in the seed's order, JSON columns as canonical text (the logic already
    gives every other column its table's dtype)."""
    out = frame[list(COLUMNS[table])].reset_index(drop=True)
    return out.assign(**{c: pd.Series(to_json_values(out[c]), dtype=object) for c in JSON_COLUMNS[table]})


# ------------------------------------------------------------------------------------------------ inputs


def read_events(conn: sa.Connection, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The window's anomaly events with their DSI evidence, in time order (the contract's ``events``
    frame)."""
    frame = fetch_frame(
        conn,
        """
        SELECT e.event_id::text AS event_id, e.symbol, e."timestamp", e.anomaly_type,
               e.anomaly_score::float8 AS anomaly_score, e.dsi_evidence_id::text AS dsi_evidence_id,
               d.mx_evidence::float8 AS mx_evidence, d.mx_confirm,
               d.mx_confirm_rate::float8 AS mx_confirm_rate,
               d.mx_evidence_boost::float8 AS mx_evidence_boost,
               (d.mx_confidence_interval->>'low')::float8 AS ci_low,
               (d.mx_confidence_interval->>'high')::float8 AS ci_high,
               (e.signal_pack->'context'->>'htf_15m_ret')::float8 AS htf_15m_ret,
               (e.signal_pack->'context'->>'htf_1h_ret')::float8 AS htf_1h_ret
        FROM anomaly_events e JOIN dsi_evidence d ON d.evidence_id = e.dsi_evidence_id
        WHERE e."timestamp" >= %(a)s AND e."timestamp" < %(b)s
        ORDER BY e."timestamp", e.event_id""",
        {"a": start.to_pydatetime(), "b": end.to_pydatetime()},
    )
    columns = [
        "event_id",
        "symbol",
        "timestamp",
        "anomaly_type",
        "anomaly_score",
        "dsi_evidence_id",
        "mx_evidence",
        "mx_confirm",
        "mx_confirm_rate",
        "mx_evidence_boost",
        "ci_low",
        "ci_high",
        "htf_15m_ret",
        "htf_1h_ret",
    ]
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns}).astype(
            {
                "event_id": object,
                "symbol": object,
                "timestamp": "datetime64[us, UTC]",
                "anomaly_type": object,
                "dsi_evidence_id": object,
                "mx_confirm": bool,
            }
        )
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["mx_confirm"] = frame["mx_confirm"].astype(str).str.lower().isin(("t", "true"))
    for column in ("event_id", "symbol", "anomaly_type", "dsi_evidence_id"):
        frame[column] = frame[column].astype(str)
    return frame[columns]


# bars of each event's symbol read before its bar: the longest trailing window of the day (REGIME_WINDOW
# returns need REGIME_WINDOW + 1 bars; the ATR and the cost model's windows are shorter, and the entry and
# exit bars lie after the event bar)
BARS_BEFORE_EVENT = plan_tables.REGIME_WINDOW
PLAN_BAR_COLUMNS = ("symbol", "timestamp", "open", "high", "low", "close", "volume")
# bars read by one query of ``read_plan_bars`` (at most: a stretch is never split)
PLAN_BARS_PER_QUERY = 200_000


def read_plan_bars(
    conn: sa.Connection,
    events: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    horizon: pd.Timedelta | Mapping[str, pd.Timedelta],
) -> pd.DataFrame:
    """The 1-minute bars of ``[start, end)`` that the plans of ``events`` can read (in no particular order:
    ``DayBars`` sorts them): per event, its symbol's bars from the ``BARS_BEFORE_EVENT``-th bar before the
    event bar (or ``start``) through the first bar at or after ``event + 1 min + horizon`` (``horizon``: the
    longest plan horizon of the day's alphas, or per anomaly type that of the alphas that plan it, 0 for a
    type none plans: ``generate.horizons_by_type``; or ``end``); the stretches of a symbol that overlap are
    read once.

    Every figure of a plan is taken over its own symbol's bars, over a fixed number of bars before a bar (the
    event bar's ``REGIME_WINDOW`` returns and ATR, the ``COST_WINDOW`` bars before an entry or exit) and over
    the bars from its timestamp to the first at or after its valid_until (its window, the first bar a desk
    sizes against): all of them inside the stretch, with the bars before them that the whole window
    ``[start, end)`` holds, so the plans, approvals, executions and scores are those of the whole window, bit
    for bit. Two queries: the stretches' bounds (two index probes per event on the primary key), then their
    bars by index range, as one row of binary arrays (every aggregate of the one query takes the same rows in
    the same order, so the arrays stay aligned; no ORDER BY: the sort would spill to disk for nothing).
    """
    if events is None or events.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in PLAN_BAR_COLUMNS}).astype(
            {"symbol": object, "timestamp": "datetime64[us, UTC]"}
        )
    ts = pd.to_datetime(events["timestamp"], utc=True)
    if isinstance(horizon, Mapping):  # the longest horizon of the alphas that plan the event's type
        none = pd.Timedelta(0)
        horizon = pd.Series(
            pd.to_timedelta([horizon.get(t, none) for t in events["anomaly_type"]]), index=ts.index
        )
    until = np.minimum(ts + pd.Timedelta(minutes=1) + horizon, end)
    bounds = fetch_frame(
        conn,
        """
        SELECT e.symbol,
               coalesce((SELECT m."timestamp" FROM market_data_1m m
                         WHERE m.symbol = e.symbol AND m."timestamp" >= %(start)s AND m."timestamp" <= e.ts
                         ORDER BY m."timestamp" DESC OFFSET %(before)s LIMIT 1), %(start)s) AS lo,
               coalesce((SELECT m."timestamp" FROM market_data_1m m
                         WHERE m.symbol = e.symbol AND m."timestamp" >= e.until AND m."timestamp" < %(end)s
                         ORDER BY m."timestamp" LIMIT 1), %(end)s) AS hi
        FROM unnest(%(symbols)s::text[], %(ts)s::timestamptz[], %(until)s::timestamptz[])
             AS e(symbol, ts, until)
        """,
        {
            "start": start.to_pydatetime(),
            "end": end.to_pydatetime(),
            "before": BARS_BEFORE_EVENT,
            "symbols": [str(x) for x in events["symbol"]],
            "ts": list(ts.dt.to_pydatetime()),
            "until": list(pd.Series(until).dt.to_pydatetime()),
        },
    )
    stretches = _merged(bounds)
    # a query per piece of stretches of about PLAN_BARS_PER_QUERY bars (a stretch holds at most a bar a
    # minute): the binary arrays of a piece are decoded and dropped before the next is read, so the wire
    # form (80 bytes a bar, twice while psycopg copies it out of libpq) is never held for the whole day
    minutes = (stretches["hi"] - stretches["lo"]) / pd.Timedelta(minutes=1) + 1
    piece = (np.cumsum(minutes.to_numpy(dtype="float64")) // PLAN_BARS_PER_QUERY).astype("int64")
    parts: list[list[np.ndarray | None]] = []
    for first, last in _runs(piece):
        part = stretches.iloc[first:last]
        arrays = fetch_column_arrays(
            conn,
            """
            SELECT array_send(array_agg(c0)), array_send(array_agg(c1)), array_send(array_agg(c2)),
                   array_send(array_agg(c3)), array_send(array_agg(c4)), array_send(array_agg(c5)),
                   array_send(array_agg(c6))
            FROM (SELECT w.k::int4 AS c0, m."timestamp" AS c1,
                         m.open::float8 AS c2, m.high::float8 AS c3, m.low::float8 AS c4,
                         m.close::float8 AS c5, coalesce(m.volume::float8, 'NaN') AS c6
                  FROM market_data_1m m
                  JOIN unnest(%(symbols)s::text[], %(lo)s::timestamptz[], %(hi)s::timestamptz[])
                       WITH ORDINALITY AS w(symbol, lo, hi, k)
                    ON m.symbol = w.symbol AND m."timestamp" >= w.lo AND m."timestamp" <= w.hi
                  WHERE m."timestamp" >= %(start)s AND m."timestamp" < %(end)s) AS bars
            """,
            {
                "symbols": part["symbol"].tolist(),
                "lo": list(part["lo"].dt.to_pydatetime()),
                "hi": list(part["hi"].dt.to_pydatetime()),
                "start": start.to_pydatetime(),
                "end": end.to_pydatetime(),
            },
            [">i4", ">i8", ">f8", ">f8", ">f8", ">f8", ">f8"],
        )
        assert arrays is not None  # no NULL can reach the arrays (NOT NULL columns, coalesced volume)
        # each row's stretch by its number in the piece (1-based), as a row of ``stretches``
        parts.append(
            [arrays[0].astype("int64") + (first - 1), arrays[1].astype("int64")]
            + [a.astype("float64") for a in arrays[2:]]
        )
        del arrays  # the piece's wire bytes
    # one column at a time, each piece's part of it dropped once joined: the day's bars held once, not twice
    columns = []
    for i in range(len(PLAN_BAR_COLUMNS)):
        columns.append(np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, dtype="int64"))
        for p in parts:
            p[i] = None
    # each row's symbol through its stretch: no text crosses the wire per row
    symbols = stretches["symbol"].to_numpy(dtype=object)[columns[0]]
    frame = {
        "symbol": pd.Series(symbols, dtype=object),
        "timestamp": pd.to_datetime(columns[1] + PG_EPOCH_US, unit="us", utc=True),
        **{c: columns[i + 2].astype("float64", copy=False) for i, c in enumerate(PLAN_BAR_COLUMNS[2:])},
    }
    return pd.DataFrame(frame, columns=list(PLAN_BAR_COLUMNS), copy=False)


def _runs(piece: np.ndarray) -> list[tuple[int, int]]:
    """[first, last) of each run of equal numbers in ``piece`` (non-decreasing)."""
    if len(piece) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, piece[1:] != piece[:-1]])
    return list(zip(starts.tolist(), np.append(starts[1:], len(piece)).tolist(), strict=True))


def _merged(bounds: pd.DataFrame) -> pd.DataFrame:
    """The stretches (symbol, lo, hi), inclusive, with the overlapping ones of a symbol merged.

    In (symbol, lo, hi) order a row starts a stretch when it is its symbol's first or its ``lo`` is after
    every earlier ``hi`` of its symbol (the running maximum: the rows are in ``lo`` order, so that is the
    current stretch's end); a stretch is its first row's symbol and ``lo`` and the largest ``hi`` of its
    rows (what a walk over the rows extending the last stretch gives, without a Python step per event)."""
    b = bounds.assign(
        lo=pd.to_datetime(bounds["lo"], utc=True), hi=pd.to_datetime(bounds["hi"], utc=True)
    ).sort_values(["symbol", "lo", "hi"], kind="stable")
    if b.empty:
        return pd.DataFrame([], columns=["symbol", "lo", "hi"]).astype({"symbol": object})
    symbol = b["symbol"].to_numpy(dtype=object)
    lo = b["lo"].to_numpy(dtype="datetime64[ns]").view("int64")
    hi = b["hi"].to_numpy(dtype="datetime64[ns]").view("int64")
    first = np.r_[True, symbol[1:] != symbol[:-1]]
    # the running maximum of hi within each symbol, before each row
    reach = pd.Series(hi).groupby(np.cumsum(first)).cummax().to_numpy()
    start = first | (lo > np.r_[np.iinfo(np.int64).min, reach[:-1]])
    rows = np.flatnonzero(start)
    ends = pd.Series(np.maximum.reduceat(hi, rows).astype("datetime64[ns]")).dt.tz_localize("UTC")
    return pd.DataFrame(
        {
            "symbol": pd.Series(symbol[rows], dtype=object),
            "lo": b["lo"].iloc[rows].reset_index(drop=True),
            "hi": ends.astype(b["hi"].dtype),
        }
    )


# each symbol's closes as one row of two binary arrays: no symbol text per bar crosses the wire or is decoded.
# The rows come ordered from the primary key's index into a streaming aggregate (a hash aggregate of a few
# million bars spills to disk at the default work_mem; an ORDER BY inside the aggregates sorts every symbol's
# bars again), so a cursor hands them over a few symbols at a time as the scan goes
_DAY_CLOSES = """
    SELECT symbol::text, array_send(array_agg(ts)), array_send(array_agg(c))
    FROM (SELECT symbol, "timestamp" AS ts, close::float8 AS c FROM market_data_1m
          WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s
          ORDER BY symbol, "timestamp") AS bars
    GROUP BY symbol"""
# symbols per piece of ``read_day_closes_in_pieces``: ~1,560 bars each, ~150,000 bars a piece
SYMBOLS_PER_PIECE = 100


def read_day_closes_in_pieces(
    conn: sa.Connection, start: pd.Timestamp, end: pd.Timestamp, symbols: int = SYMBOLS_PER_PIECE
) -> Iterator[pd.DataFrame]:
    """symbol, timestamp, close of every 1-minute bar of ``[start, end)`` (what needs every symbol: the day's
    regime, the triggers' market regime, the bar notes), a piece of ``symbols`` symbols at a time: every bar
    of a symbol in one piece, the pieces in the database's order of the symbols, each piece's symbols in
    Python's order and each symbol's bars in the order the scan gives them (in time order in practice;
    ``closes.sorted_closes`` checks and sorts if not). A server-side cursor, so neither this process nor the
    server holds more than a piece of a day's bars (a day of 5,000 symbols is ~8 million bars). Run inside a
    transaction (the cursor lives in it)."""
    raw = raw_connection(conn)
    with raw.cursor(name="day_closes", binary=True) as cur:
        cur.execute(_DAY_CLOSES, {"start": start.to_pydatetime(), "end": end.to_pydatetime()})
        while rows := cur.fetchmany(symbols):
            yield _closes_frame(rows)


def _closes_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """symbol, timestamp, close of the rows of ``_DAY_CLOSES``, symbols in Python's order."""
    rows = sorted(rows, key=lambda r: str(r[0]))
    names = [str(r[0]) for r in rows]
    stamps = [_binary_array(r[1], ">i8") for r in rows]
    closes = [_binary_array(r[2], ">f8") for r in rows]
    counts = [len(x) for x in stamps]
    return pd.DataFrame(
        {
            "symbol": pd.Series(np.repeat(np.array(names, dtype=object), counts), dtype=object),
            "timestamp": pd.to_datetime(
                (np.concatenate(stamps) if rows else np.zeros(0)).astype("int64") + PG_EPOCH_US,
                unit="us",
                utc=True,
            ),
            "close": (np.concatenate(closes) if rows else np.zeros(0)).astype("float64"),
        }
    )


def _binary_array(data: bytes, kind: str) -> np.ndarray:
    """A one-dimensional PostgreSQL array without NULLs, in its binary form (``array_send``), as numpy."""
    count = int.from_bytes(data[12:16], "big") if int.from_bytes(data[0:4], "big") == 1 else 0
    element = np.dtype([("len", ">i4"), ("value", kind)])
    if int.from_bytes(data[4:8], "big") or len(data) != (20 if count else 12) + count * element.itemsize:
        raise ValueError("not a one-dimensional array of fixed-width values without NULLs")
    return np.frombuffer(data, dtype=element, count=count, offset=20)["value"]


def read_history(conn: sa.Connection, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """module_performance rows of [start, end), numbers as float64, ids as text."""
    columns = COLUMNS["module_performance"]
    select = ", ".join(
        f'"{c}"::text AS "{c}"'
        if c.endswith("_id")
        else f'"{c}"'
        if c in ("timestamp", "market_regime", "asset_class", "time_horizon")
        else f'"{c}"::float8 AS "{c}"'
        for c in columns
    )
    frame = fetch_frame(
        conn,
        f"SELECT {select} FROM module_performance "
        'WHERE "timestamp" >= %(a)s AND "timestamp" < %(b)s ORDER BY "timestamp", module_id',
        {"a": start.to_pydatetime(), "b": end.to_pydatetime()},
    )
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns}).astype(
            {
                "performance_id": object,
                "module_id": object,
                "timestamp": "datetime64[us, UTC]",
                "market_regime": object,
                "asset_class": object,
                "time_horizon": object,
            }
        )
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    for column in ("performance_id", "module_id", "market_regime", "asset_class", "time_horizon"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame[list(columns)]


def previous_population(
    conn: sa.Connection, before: pd.Timestamp, fingerprint: str
) -> tuple[pd.Timestamp, str] | None:
    """(day, population JSON) of the latest stored end-of-day state before ``before`` for this configuration
    that is still valid: neither the bars nor DSI's scores of a day up to its own were written since it was
    saved."""
    row = conn.execute(
        sa.text(
            "SELECT s.day, s.population::text FROM ecosystem_state s "
            "WHERE s.day < :d AND s.config_fingerprint = :f "
            f"AND s.source_version >= {versions_up_to('s.day', DAY_VERSION_TABLES)} "
            "ORDER BY s.day DESC LIMIT 1"
        ),
        {"d": before.date(), "f": fingerprint},
    ).first()
    return None if row is None else (pd.Timestamp(row.day, tz="UTC"), row.population)


def first_event_day(conn: sa.Connection) -> pd.Timestamp | None:
    first = conn.execute(sa.text('SELECT min("timestamp") FROM anomaly_events')).scalar_one()
    return None if first is None else pd.Timestamp(first).tz_convert("UTC").normalize()


# ------------------------------------------------------------------------------------------------ outputs


def clear_window(conn: sa.Connection, start: pd.Timestamp, end: pd.Timestamp) -> dict[str, int]:
    """Delete what a previous run wrote for [start, end): links first, then children before parents."""
    window = {"a": start, "b": end}
    window_plans = 'SELECT plan_id FROM trading_plans WHERE "timestamp" >= :a AND "timestamp" < :b'
    conn.execute(
        sa.text(f"""
        UPDATE anomaly_events SET trading_plan_id = NULL, plan_generation_module_id = NULL,
               plan_execution_status = NULL, plan_performance_metrics = NULL, attribution_analysis = NULL,
               module_intelligence = NULL, intelligence_confidence = NULL
        WHERE trading_plan_id IN ({window_plans})"""),
        window,
    )
    conn.execute(sa.text(f"UPDATE dsi_evidence SET plan_id = NULL WHERE plan_id IN ({window_plans})"), window)
    conn.execute(sa.text(f"DELETE FROM trading_plan_approvals WHERE plan_id IN ({window_plans})"), window)
    deleted = {}
    for table in WINDOW_TABLES:
        deleted[table] = conn.execute(
            sa.text(f'DELETE FROM {table} WHERE "timestamp" >= :a AND "timestamp" < :b'), window
        ).rowcount
    conn.execute(
        sa.text("DELETE FROM ecosystem_state WHERE day >= :a AND day < :b"),
        {"a": start.date(), "b": end.date()},
    )
    return deleted


def upsert_modules(conn: sa.Connection, rows: pd.DataFrame) -> int:
    """Insert new modules and bring known ones to the given state (COPY to a temp table, one upsert)."""
    if rows.empty:
        return 0
    frame = table_frame(rows, "modules")
    conn.execute(sa.text("CREATE TEMP TABLE modules_stage (LIKE modules INCLUDING DEFAULTS) ON COMMIT DROP"))
    copy_frame(raw_connection(conn), "modules_stage", frame)
    columns = ", ".join(f'"{c}"' for c in COLUMNS["modules"])
    updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in COLUMNS["modules"] if c != "module_id")
    written = conn.execute(
        sa.text(
            f"INSERT INTO modules ({columns}) SELECT {columns} FROM modules_stage "
            f"ON CONFLICT (module_id) DO UPDATE SET {updates}"
        )
    ).rowcount
    conn.execute(sa.text("DROP TABLE modules_stage"))
    return written


def write_rows(conn: sa.Connection, table: str, rows: pd.DataFrame) -> int:
    if table not in COLUMNS:
        raise ValueError(f"not a table of the trading day: {table!r}")
    if rows.empty:
        return 0
    return copy_frame(raw_connection(conn), table, table_frame(rows, table))


def link_plans(conn: sa.Connection, plans: pd.DataFrame) -> tuple[int, int]:
    """Point each planned event and its evidence at the plan (the seed's plan ↔ evidence ↔ event
    relations)."""
    if plans.empty:
        return 0, 0
    links = pd.DataFrame(
        {
            "event_id": plans["event_id"].astype(str).to_numpy(),
            "dsi_evidence_id": plans["dsi_evidence_id"].astype(str).to_numpy(),
            "plan_id": plans["plan_id"].astype(str).to_numpy(),
            "module_id": plans["module_id"].astype(str).to_numpy(),
            "execution_status": plans["execution_status"].to_numpy(),
            "metrics": np.array(to_json_values(plans["performance_metrics"]), dtype=object),
            "attribution": np.array(to_json_values(plans["attribution_analysis"]), dtype=object),
            "intelligence": np.array(to_json_values(plans["module_intelligence"]), dtype=object),
            "confidence": plans["confidence_score"].astype("float64").to_numpy(),
        }
    )
    conn.execute(
        sa.text(
            "CREATE TEMP TABLE plan_links (event_id uuid, dsi_evidence_id uuid, plan_id uuid, "
            "module_id uuid, "
            "execution_status varchar(20), metrics jsonb, attribution jsonb, intelligence jsonb, "
            "confidence numeric(3,2)) ON COMMIT DROP"
        )
    )
    copy_frame(raw_connection(conn), "plan_links", links)
    events = conn.execute(
        sa.text("""
        UPDATE anomaly_events e SET trading_plan_id = l.plan_id, plan_generation_module_id = l.module_id,
               plan_execution_status = l.execution_status, plan_performance_metrics = l.metrics,
               attribution_analysis = l.attribution, module_intelligence = l.intelligence,
               intelligence_confidence = l.confidence
        FROM plan_links l WHERE e.event_id = l.event_id""")
    ).rowcount
    evidence = conn.execute(
        sa.text(
            "UPDATE dsi_evidence d SET plan_id = l.plan_id FROM plan_links l "
            "WHERE d.evidence_id = l.dsi_evidence_id"
        )
    ).rowcount
    conn.execute(sa.text("DROP TABLE plan_links"))
    return events, evidence


def save_populations(conn: sa.Connection, states: list[dict]) -> None:
    if not states:
        return
    conn.execute(
        sa.text("DELETE FROM ecosystem_state WHERE day = ANY(:days)"), {"days": [s["day"] for s in states]}
    )
    conn.execute(
        sa.text(
            "INSERT INTO ecosystem_state (day, config_fingerprint, modules, population, source_version) "
            "VALUES (:day, :config_fingerprint, :modules, CAST(:population AS jsonb), "
            f"{versions_up_to('CAST(:day AS date)', DAY_VERSION_TABLES)})"
        ),
        states,
    )


def read_report_inputs(conn: sa.Connection) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(module_performance rows, trading_plans rows, modules as a population frame) of everything stored: the
    ecosystem report's inputs (``report.build_report``)."""
    performance = read_history(
        conn, pd.Timestamp("1970-01-01", tz="UTC"), pd.Timestamp("2200-01-01", tz="UTC")
    )
    plans = fetch_frame(
        conn,
        'SELECT plan_id::text AS plan_id, module_id::text AS module_id, symbol, "timestamp", '
        'execution_status, pnl::float8 AS pnl FROM trading_plans ORDER BY "timestamp", plan_id',
        {},
    )
    if plans.empty:
        plans = pd.DataFrame(
            {
                "plan_id": pd.Series(dtype=object),
                "module_id": pd.Series(dtype=object),
                "symbol": pd.Series(dtype=object),
                "timestamp": pd.Series(dtype="datetime64[us, UTC]"),
                "execution_status": pd.Series(dtype=object),
                "pnl": pd.Series(dtype="float64"),
            }
        )
    plans["timestamp"] = pd.to_datetime(plans["timestamp"], utc=True)
    population = fetch_frame(
        conn,
        "SELECT module_id::text AS module_id, module_type, generational_depth, parent_modules, created_at, "
        "learning_patterns FROM modules ORDER BY module_id",
        {},
    )
    patterns = [
        lp if isinstance(lp, dict) else json.loads(lp or "{}") for lp in population["learning_patterns"]
    ]
    parents = [p if isinstance(p, list) else json.loads(p or "[]") for p in population["parent_modules"]]
    population = population.drop(columns="learning_patterns").assign(
        name=[lp.get("name") for lp in patterns],
        genome=[lp.get("genome") or {} for lp in patterns],
        parent_modules=parents,
        created_at=pd.to_datetime(population["created_at"], utc=True),
        generational_depth=population["generational_depth"].astype(int),
    )
    return performance, plans, population


# ------------------------------------------------------------------------------------------ the message bus


def read_carried_messages(conn: sa.Connection, day: pd.Timestamp) -> pd.DataFrame:
    """The messages earlier days left pending that no day has re-offered yet (no row names them in
    ``message_data->>'carried_from'``): the bus re-offers them on ``day`` (``ecosystem.messages
    .carry_messages``). Usually the day before's; after a gap in the data, older ones however old, whose ttl
    ran out: the bus expires them (``ix_module_messages_carried_from`` makes each look-up one probe)."""
    from tis_pipeline.trading_day.bus.durable import read_messages

    frame = read_messages(
        conn,
        "status = 'pending' AND \"timestamp\" < :b AND NOT EXISTS ("
        'SELECT 1 FROM module_messages c WHERE c."timestamp" > module_messages."timestamp" '
        "AND c.\"timestamp\" < :b AND c.message_data->>'carried_from' = module_messages.message_id::text)",
        {"b": day.to_pydatetime()},
    )
    return frame.sort_values(["timestamp", "message_type", "message_id"], kind="stable").reset_index(
        drop=True
    )


def write_bar_notes(
    conn: sa.Connection, notes: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, clear: bool = True
) -> int:
    """``market_data_1m.module_intelligence`` / ``module_learning_updates`` for [start, end): cleared in the
    window, then set on the noted bars (COPY to a temp table, one set-based UPDATE). Returns bars noted.

    ``clear=False``: the window holds no note to clear, which the caller knows when the window held no
    ``trading_plans`` row before the run (``clear_window`` deleted none): a note is written only on a bar of
    a symbol and day a plan of the same run was made for (``ecosystem/notes.py``: the plan's event bar, the
    last bar of the day of a symbol its module planned on), in the same transaction as the plans, and bars
    are kept for days while plans are kept for years (``ops/retention.py``). The clearing scans every bar of
    the window (no index holds the notes): seconds for a day of a few thousand symbols, for nothing on a
    day's first run."""
    if clear:
        conn.execute(
            sa.text(
                "UPDATE market_data_1m SET module_intelligence = NULL, module_learning_updates = NULL "
                'WHERE "timestamp" >= :a AND "timestamp" < :b '
                "AND (module_intelligence IS NOT NULL OR module_learning_updates IS NOT NULL)"
            ),
            {"a": start, "b": end},
        )
    if notes is None or notes.empty:
        return 0
    frame = notes[["symbol", "timestamp", "module_intelligence", "module_learning_updates"]].reset_index(
        drop=True
    )
    frame = frame.assign(
        module_intelligence=pd.Series(to_json_values(frame["module_intelligence"]), dtype=object),
        module_learning_updates=pd.Series(to_json_values(frame["module_learning_updates"]), dtype=object),
    )
    conn.execute(
        sa.text(
            'CREATE TEMP TABLE bar_notes (symbol varchar(20), "timestamp" timestamptz, '
            "module_intelligence jsonb, module_learning_updates jsonb) ON COMMIT DROP"
        )
    )
    copy_frame(raw_connection(conn), "bar_notes", frame)
    noted = conn.execute(
        sa.text(
            "UPDATE market_data_1m m SET module_intelligence = n.module_intelligence, "
            "module_learning_updates = n.module_learning_updates "
            'FROM bar_notes n WHERE m.symbol = n.symbol AND m."timestamp" = n."timestamp"'
        )
    ).rowcount
    conn.execute(sa.text("DROP TABLE bar_notes"))
    return noted
