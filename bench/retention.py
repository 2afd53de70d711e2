"""Retention benchmark: removing one UTC day of 1-minute bars by DELETE vs by DETACH + DROP of its partition.

    python -m bench.retention --days 3 --symbols 50

In a scratch database on the server of TIS_DATABASE_URL (or the embedded one), dropped at the end: migrate,
load ``--days`` days of synthetic bars with ``support.day_builds.write_days`` (one transaction, as the ingest
writes them), then remove the middle day ``--repeat`` times each way, re-loading it in between:

(a) ``DELETE FROM market_data_1m WHERE "timestamp" >= day AND "timestamp" < day + 1`` (commit included), and
    separately the ``VACUUM`` of that partition that a DELETE needs before its space can be reused;
(b) ``ALTER TABLE market_data_1m DETACH PARTITION market_data_1m_pYYYYMMDD; DROP TABLE ...`` (commit
included).

and (c) the archive that retention writes first: the middle day's rows as retention reads them, written to
``<day>.parquet`` and verified by content (row count, order-independent digest, sorted equality), then the
same call again, which finds the file already holding the rows and reuses it (a retry after a kill).

Prints one JSON line last: rows removed, best and median seconds of each way, the ratio of the medians, and
the seconds of the verified archive write and of its reuse.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings

import pandas as pd
import sqlalchemy as sa

from bench.ingest import drop_database, scratch_database

warnings.filterwarnings("ignore")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument(
        "--repeat", type=int, default=5, help="removals of the day per way (re-loaded in between)"
    )
    args = parser.parse_args()
    if args.days < 1:
        parser.error("--days must be at least 1")

    from psycopg import sql

    from tis_pipeline.market_data import synthetic
    from tis_pipeline.pg import migrate
    from tis_pipeline.pg.engine import engine, raw_connection
    from tis_pipeline_tests.support.day_builds import write_days

    symbols = [f"SYM{i:03d}" for i in range(args.symbols)]
    start = pd.Timestamp("2024-01-01", tz="UTC")
    end = start + pd.Timedelta(days=args.days)
    day = start + pd.Timedelta(days=args.days // 2)  # the middle day: neighbours on both sides stay
    next_day = day + pd.Timedelta(days=1)
    frame = synthetic.bars(start, end, symbols, seed=1)
    day_frame = frame[(frame["timestamp"] >= day) & (frame["timestamp"] < next_day)].reset_index(drop=True)
    partition = f"market_data_1m_p{day:%Y%m%d}"
    bounds = {"a": day, "b": next_day}

    server, url = scratch_database()
    out: dict = {
        "days_loaded": args.days,
        "symbols": args.symbols,
        "rows_loaded": len(frame),
        "day": day.date().isoformat(),
        "partition": partition,
    }
    try:
        migrate.upgrade(url)
        eng = engine(url)
        t0 = time.perf_counter()
        write_days(eng, frame, start, end, symbols)
        out["load_s"] = round(time.perf_counter() - t0, 3)

        def reload_day() -> None:
            write_days(eng, day_frame, day, next_day, symbols)

        def day_rows() -> int:
            with eng.connect() as conn:
                return conn.execute(
                    sa.text(
                        'SELECT count(*) FROM market_data_1m WHERE "timestamp" >= :a AND "timestamp" < :b'
                    ),
                    bounds,
                ).scalar_one()

        def total_rows() -> int:
            with eng.connect() as conn:
                return conn.execute(sa.text("SELECT count(*) FROM market_data_1m")).scalar_one()

        with eng.connect() as conn:
            out["partition_bytes"] = conn.execute(
                sa.text("SELECT pg_total_relation_size(CAST(:p AS regclass))"), {"p": partition}
            ).scalar_one()

        # (c) the verified archive of the day, written, then reused, in a directory of its own
        from tis_pipeline.ops import retention

        with eng.begin() as conn:
            archived = retention._fetch_text(
                conn, f'SELECT * FROM "{partition}" ORDER BY symbol, "timestamp"', {}
            )
        with tempfile.TemporaryDirectory() as folder:
            os.environ["TIS_ARCHIVE_DIR"] = folder
            t0 = time.perf_counter()
            path = retention.write_verified(archived, "market_data_1m", f"{day:%Y-%m-%d}")
            out["archive_write_verified_s"] = round(time.perf_counter() - t0, 4)
            t0 = time.perf_counter()
            assert retention.write_verified(archived, "market_data_1m", f"{day:%Y-%m-%d}") == path
            out["archive_reuse_s"] = round(time.perf_counter() - t0, 4)
            out["archive_rows"] = archived.num_rows
            out["archive_chunks_read"] = archived.column(0).num_chunks

        delete_s, vacuum_s, drop_s, rows = [], [], [], []
        for _ in range(args.repeat):
            # (a) DELETE of the day's rows, through the parent (partition pruning picks the one child)
            expected = day_rows()
            t0 = time.perf_counter()
            with eng.begin() as conn:
                deleted = conn.execute(
                    sa.text('DELETE FROM market_data_1m WHERE "timestamp" >= :a AND "timestamp" < :b'), bounds
                ).rowcount
            delete_s.append(time.perf_counter() - t0)
            assert deleted == expected and day_rows() == 0, (deleted, expected)
            rows.append(deleted)
            # the dead tuples stay until VACUUM; timed apart (autocommit: VACUUM refuses a transaction block)
            t0 = time.perf_counter()
            with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text(f'VACUUM "{partition}"'))
            vacuum_s.append(time.perf_counter() - t0)
            reload_day()
            assert day_rows() == expected

            # (b) DETACH + DROP of the day's partition
            before = total_rows()
            t0 = time.perf_counter()
            with eng.begin() as conn, raw_connection(conn).cursor() as cur:
                cur.execute(
                    sql.SQL("ALTER TABLE market_data_1m DETACH PARTITION {}").format(
                        sql.Identifier(partition)
                    )
                )
                cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(partition)))
            drop_s.append(time.perf_counter() - t0)
            assert day_rows() == 0 and total_rows() == before - expected
            reload_day()
            assert day_rows() == expected

        out["rows_removed"] = rows[0]
        out["delete_s_best"] = round(min(delete_s), 4)
        out["delete_s_median"] = round(statistics.median(delete_s), 4)
        out["delete_rows_per_s_median"] = round(rows[0] / statistics.median(delete_s))
        out["vacuum_after_delete_s_median"] = round(statistics.median(vacuum_s), 4)
        out["detach_drop_s_best"] = round(min(drop_s), 4)
        out["detach_drop_s_median"] = round(statistics.median(drop_s), 4)
        out["delete_vs_drop_median"] = round(statistics.median(delete_s) / statistics.median(drop_s), 1)
        out["repeat"] = args.repeat
        assert total_rows() == len(frame)
    finally:
        drop_database(server, url)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
