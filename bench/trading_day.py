"""Trading-day benchmark: plans, approvals, execution, performance and the ecosystem over synthetic days.

    python -m bench.trading_day [--days 5] [--symbols 50]

Loads the bars, DSI and then times ``trading_day`` alone over the range (one run), in a scratch database.
Prints one JSON line last: days, events, plans, rows written per table, seconds, and events per second.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import sqlalchemy as sa

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--symbols", type=int, default=50)
    args = parser.parse_args()
    import dagster as dg

    from bench.ingest import drop_database, scratch_database, synthetic_range
    from tis_pipeline.dsi.assets import dsi
    from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
    from tis_pipeline.pg import migrate
    from tis_pipeline.pg.engine import engine
    from tis_pipeline.trading_day.assets import TABLES, trading_day

    server, url = scratch_database()
    try:
        migrate.upgrade(url)
        resources, tags = synthetic_range(url, args.symbols, "2024-03-04", args.days)
        upstream = [market_data_1m, market_data_15m, market_data_1h, dsi]
        assert dg.materialize(upstream, resources=resources, tags=tags).success
        sources = [spec for a in upstream for spec in a.to_source_assets()]
        t0 = time.perf_counter()
        assert dg.materialize([*sources, trading_day], resources=resources, tags=tags).success
        seconds = time.perf_counter() - t0
        with engine(url).connect() as conn:
            rows = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}
            events = conn.execute(sa.text("SELECT count(*) FROM anomaly_events")).scalar_one()
        print(
            json.dumps(
                {
                    "days": args.days,
                    "symbols": args.symbols,
                    "events": events,
                    "rows": rows,
                    "run_s": round(seconds, 2),
                    "events_per_s": round(events / seconds),
                    "plans_per_s": round(rows["trading_plans"] / seconds),
                }
            )
        )
    finally:
        drop_database(server, url)


if __name__ == "__main__":
    main()
