"""Great Expectations vs plain pandas on the same registry, over about a million synthetic one-minute bars.

    .venv/bin/python -m bench.validation_frames [--rows 1000000] [--repeat 2]

Prints the wall time of each evaluator on a clean frame and on a frame with 1 % of the rows broken (more
failing rows make GE's COMPLETE result format build longer index lists), and checks the two reports agree.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

SYMBOLS = ("BTCUSD", "ETHUSD", "SPY", "EURUSD", "AAPL")


def synthetic_bars(rows: int, seed: int = 42) -> pd.DataFrame:
    """At least ``rows`` bars from the project's synthetic source (whole UTC days), cut to ``rows``."""
    from tis_pipeline.market_data import synthetic

    days = int(np.ceil(rows / (synthetic.MINUTES_PER_DAY * 0.995 * len(SYMBOLS)))) + 1
    start = pd.Timestamp("2024-01-01", tz="UTC")
    bars = synthetic.bars(start, start + pd.Timedelta(days=days), SYMBOLS, seed=seed)
    bars["mx_evidence"] = np.round(np.random.default_rng(seed).uniform(0, 1, len(bars)), 2)
    return bars.sort_values(["symbol", "timestamp"], kind="stable").head(rows).reset_index(drop=True)


def broken(bars: pd.DataFrame, share: float = 0.01, seed: int = 1) -> pd.DataFrame:
    """A copy where ``share`` of the rows have low = 0 or a negative volume (error rules fail)."""
    out = bars.copy()
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(out), int(len(out) * share), replace=False)
    half = len(rows) // 2
    out.loc[rows[:half], "low"] = 0.0
    out.loc[rows[half:], "volume"] = -1.0
    return out


def _timed(fn, *args, **kwargs):
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - started, value


def arguments(argv: list[str] | None, description: str) -> argparse.Namespace:
    """``--rows`` and ``--repeat`` of the validation benchmarks (GX analytics off before GX is imported)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = arguments(argv, __doc__.splitlines()[0])

    from tis_pipeline.quality.evaluate import evaluate_frame
    from tis_pipeline.quality.ge import context, suite_for, validate_frame
    from tis_pipeline.quality.rules import rules_for

    seconds, bars = _timed(synthetic_bars, args.rows)
    print(
        f"{len(bars):,} bars of {bars['symbol'].nunique()} symbols generated in {seconds:.1f} s; "
        f"{len(rules_for('market_data_1m'))} rules on market_data_1m"
    )
    now = bars["timestamp"].max()

    setup, _ = _timed(lambda: suite_for("market_data_1m", rules_for("market_data_1m")) and context())
    print(f"GX import + ephemeral context + suite (once per process): {setup:.1f} s")

    rows = []
    for label, frame in (("clean", bars), ("1% broken", broken(bars))):
        for severity in (None, "error"):
            timings: dict[str, list[float]] = {"pandas": [], "great_expectations": []}
            reports = {}
            for _ in range(args.repeat):
                for name, fn in (("pandas", evaluate_frame), ("great_expectations", validate_frame)):
                    seconds, report = _timed(fn, frame, "market_data_1m", severity=severity, now=now)
                    timings[name].append(seconds)
                    reports[name] = report
            p, g = reports["pandas"], reports["great_expectations"]
            agree = all(
                (a.unexpected_count, a.passed) == (b.unexpected_count, b.passed) and a.mask.equals(b.mask)
                for a, b in zip(p.results, g.results, strict=True)
            )
            failing = sum(r.unexpected_count for r in p.results)
            rows.append(
                (
                    label,
                    severity or "all",
                    len(p.results),
                    failing,
                    min(timings["pandas"]),
                    min(timings["great_expectations"]),
                    agree,
                )
            )

    print()
    print(
        f"{'frame':<10} {'rules':<6} {'n':>3} {'failing rows':>13} "
        f"{'pandas s':>9} {'GE s':>8} {'GE/pandas':>9} agree"
    )
    for label, severity, n, failing, pandas_s, ge_s, agree in rows:
        print(
            f"{label:<10} {severity:<6} {n:>3} {failing:>13,} "
            f"{pandas_s:>9.2f} {ge_s:>8.2f} {ge_s / pandas_s:>9.1f} {agree}"
        )
    per_million = 1_000_000 / len(bars)
    clean_all = rows[0]
    print(
        f"\nper 1M bars, all rules, clean frame: pandas {clean_all[4] * per_million:.2f} s, "
        f"GE {clean_all[5] * per_million:.2f} s (best of {args.repeat})"
    )


if __name__ == "__main__":
    main()
