"""Out-of-sample quality of the stored DSI scores: IC and hit rate of ``mx_evidence`` (and of the evidence on
the bars ``mx_confirm`` confirmed) against 5-bar forward returns, next to the last-return-sign baseline.

    TIS_MARKET_DATA_DIR=../shared/data/market make demo   # score the real files first
    python -m bench.dsi_quality [--horizon 5]

Reads every scored bar of ``market_data_1m`` in the project's database (``TIS_DATABASE_URL`` or the embedded
one), per symbol and overall; the first ``tail_rows`` bars of each symbol (the scorer's warm-up) are left out.
Every score is walk-forward, so every bar is out of sample. Prints a table and one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings

import pandas as pd

warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", type=int, default=5)
    args = parser.parse_args(argv)

    from tis_pipeline import environment
    from tis_pipeline.dsi.evaluation import evaluate
    from tis_pipeline.dsi.logic.config import DsiConfig
    from tis_pipeline.market_data.store import read_bars
    from tis_pipeline.pg.engine import engine

    environment.prepare()
    with engine(os.environ["TIS_DATABASE_URL"]).connect() as conn:
        bars = read_bars(
            conn,
            "market_data_1m",
            pd.Timestamp("1970-01-01", tz="UTC"),
            pd.Timestamp("2100-01-01", tz="UTC"),
            ("symbol", "timestamp", "close", "mx_evidence", "mx_confirm"),
        )
    bars = bars[bars["mx_evidence"].notna()]
    warmup = DsiConfig().tail_rows
    rows = {symbol: evaluate(part, part, args.horizon, warmup) for symbol, part in bars.groupby("symbol")}
    rows["all"] = evaluate(bars, bars, args.horizon, warmup)
    table = pd.DataFrame(rows).T[
        [
            "n",
            "ic",
            "hit_rate",
            "naive_ic",
            "naive_hit_rate",
            "confirmed_n",
            "confirmed_ic",
            "confirmed_hit_rate",
            "unconfirmed_hit_rate",
        ]
    ]
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print(
        json.dumps(
            {
                "bars": len(bars),
                "horizon": args.horizon,
                "warmup": warmup,
                **{
                    k: (None if pd.isna(v) else int(v) if k in _COUNTS else round(float(v), 4))
                    for k, v in rows["all"].items()
                },
            }
        )
    )


_COUNTS = {"n", "confirmed_n", "horizon"}  # whole numbers in the JSON line, as 74507 rather than 74507.0


if __name__ == "__main__":
    main()
