"""DSI asset benchmark: one day of 50 synthetic symbols (~72,000 bars), scoring plus every database write.

    python -m bench.dsi_asset [--days 1] [--symbols 50] [--repeat 3]

The DSI asset runs ``--repeat`` times over the same days (each run re-scores and replaces them, as a
re-materialization does); the figures are the medians, with every run's beside them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import dagster as dg

    from bench.ingest import drop_database, scratch_database, synthetic_range
    from tis_pipeline.dsi.assets import dsi
    from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
    from tis_pipeline.pg import migrate

    server, url = scratch_database()
    try:
        migrate.upgrade(url)
        resources, tags = synthetic_range(url, args.symbols, "2024-03-04", args.days)
        market = [market_data_1m, market_data_15m, market_data_1h]
        assert dg.materialize(market, resources=resources, tags=tags).success
        runs = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = dg.materialize(
                [*(a.to_source_assets()[0] for a in market), dsi], resources=resources, tags=tags
            )
            wall = time.perf_counter() - t0
            assert result.success
            meta = {
                m.asset_key.to_user_string(): m.metadata
                for m in (
                    e.event_specific_data.materialization for e in result.get_asset_materialization_events()
                )
            }
            evidence = meta["dsi_evidence"]
            runs.append(
                {
                    "asset_bars_per_s": evidence["bars_per_second_with_writes"].value,
                    "run_wall_bars_per_s": round(evidence["bars_scored"].value / wall),
                    **(
                        {"seconds_by_step": evidence["seconds_by_step"].value}
                        if "seconds_by_step" in evidence
                        else {}
                    ),
                }
            )
        print(
            json.dumps(
                {
                    "bars": evidence["bars_scored"].value,
                    "asset_bars_per_s": round(statistics.median(r["asset_bars_per_s"] for r in runs)),
                    "run_wall_bars_per_s": round(statistics.median(r["run_wall_bars_per_s"] for r in runs)),
                    "asset_bars_per_s_runs": [r["asset_bars_per_s"] for r in runs],
                    "run_wall_bars_per_s_runs": [r["run_wall_bars_per_s"] for r in runs],
                    "events": meta["anomaly_events"]["dagster/row_count"].value,
                    "seconds_by_step_last_run": runs[-1].get("seconds_by_step"),
                    "streaming_latency_last_run": evidence["streaming_latency"].value,
                }
            )
        )
    finally:
        drop_database(server, url)


if __name__ == "__main__":
    main()
