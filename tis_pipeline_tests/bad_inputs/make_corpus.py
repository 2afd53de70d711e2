"""Writes the bad-input corpus next to this file (deterministic; run it only to regenerate the files).

Every file is a real-looking file of 1-minute bars: one symbol, one UTC day, 50 bars from 10:00 UTC with
open = 100 + 0.25 * i, high = open + 0.75, low = open - 0.5, close = open + 0.25, volume = 10 + i, and ONE
kind of damage (see README.md). ``python tis_pipeline_tests/bad_inputs/make_corpus.py``
"""

from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
HEADER = "timestamp,symbol,open,high,low,close,volume"
N = 50


def bar(i: int) -> tuple[float, float, float, float, int]:
    o = 100 + 0.25 * i
    return o, o + 0.75, o - 0.5, o + 0.25, 10 + i


def minute(day: str, i: int, start: str = "10:00") -> pd.Timestamp:
    return pd.Timestamp(f"{day} {start}") + pd.Timedelta(minutes=i)


def line(ts: str, i: int, symbol: str = "BTCUSD", **override) -> str:
    o, h, lo, c, v = bar(i)
    f = {"open": f"{o:.2f}", "high": f"{h:.2f}", "low": f"{lo:.2f}", "close": f"{c:.2f}", "volume": str(v)}
    f.update({k: str(x) for k, x in override.items()})
    return ",".join([ts, symbol, f["open"], f["high"], f["low"], f["close"], f["volume"]])


def rows(day: str, n: int = N, **per_row) -> list[str]:
    """``per_row``: {"r<i>": dict of overrides} for row i."""
    out = []
    for i in range(n):
        override = per_row.get(f"r{i}", {})
        ts = override.pop("ts", f"{minute(day, i):%Y-%m-%d %H:%M:%S}")
        symbol = override.pop("symbol", "BTCUSD")
        out.append(line(ts, i, symbol, **override))
    return out


def csv(
    name: str,
    lines: list[str],
    header: str = HEADER,
    newline: str = "\n",
    end: str = "\n",
    prefix: bytes = b"",
) -> None:
    text = newline.join([header, *lines]) + end
    (HERE / name).write_bytes(prefix + text.encode("utf-8"))


def main() -> None:
    csv("nan_and_empty.csv", rows("2023-05-01", r10={"low": "NaN"}, r29={"close": ""}))
    csv("text_in_numeric.csv", rows("2023-05-02", r7={"high": "1O1.75"}, r20={"volume": "n/a"}))
    csv(
        "negative_and_zero_prices.csv",
        rows("2023-05-03", r5={"low": "-100.75"}, r15={"open": 0, "high": 0, "low": 0, "close": 0}),
    )
    csv("high_below_low.csv", rows("2023-05-04", r12={"high": "102.50", "low": "103.75"}))
    csv("open_outside_range.csv", rows("2023-05-05", r8={"open": "104.00"}, r30={"open": "106.00"}))
    csv("negative_volume.csv", rows("2023-05-06", r25={"volume": -35}))
    dup = rows("2023-05-07")
    csv("duplicate_row.csv", [*dup[:18], dup[17], *dup[18:]])
    conflict = rows("2023-05-08")
    csv(
        "same_minute_different_values.csv",
        [*conflict[:18], line("2023-05-08 10:17:00", 17, close="104.60", volume=99), *conflict[18:]],
    )
    shuffled = rows("2023-05-09")
    random.Random(5).shuffle(shuffled)
    csv("out_of_order.csv", shuffled)
    csv("seconds_not_on_minute.csv", rows("2023-05-10", r13={"ts": "2023-05-10 10:13:30"}))
    csv("future_timestamp.csv", rows("2023-05-11", r40={"ts": "2099-05-11 10:40:00"}))
    iso = [
        line(
            f"{minute('2023-05-12', i):%Y-%m-%dT%H:%M:%S}+00:00"
            if i < 25
            else f"{minute('2023-05-12', i) + pd.Timedelta(hours=2):%Y-%m-%dT%H:%M:%S}+02:00",
            i,
        )
        for i in range(N)
    ]
    csv("mixed_offsets.csv", iso)
    naive = [line(f"{minute('2023-05-13', i, '06:00'):%Y-%m-%d %H:%M}", i) for i in range(N)]
    csv("naive_new_york.csv", naive)  # New York wall time, EDT (UTC-4): 06:00 is 10:00 UTC
    # 2024-03-10 in New York: 02:00-02:59 does not exist (the clock jumps from 01:59 EST to 03:00 EDT)
    spring = [f"2024-03-10 01:{m:02d}" for m in range(35, 60)] + ["2024-03-10 02:00", "2024-03-10 02:01"]
    spring += [f"2024-03-10 03:{m:02d}" for m in range(25)]
    csv("dst_spring_forward.csv", [line(t, i, "SPY") for i, t in enumerate(spring)])
    # 2024-11-03 in New York: 01:00-01:59 happens twice (EDT, then EST); a correct recorder writes it twice
    fall = [f"2024-11-03 00:{m:02d}" for m in range(40, 60)] + [f"2024-11-03 01:{m:02d}" for m in range(60)]
    fall += [f"2024-11-03 01:{m:02d}" for m in range(60)] + [f"2024-11-03 02:{m:02d}" for m in range(20)]
    csv("dst_fall_back.csv", [line(t, i, "SPY") for i, t in enumerate(fall)])
    # the same hours for two symbols, rows in time order (SPY, QQQ, SPY, QQQ...), as multi-symbol exports are
    csv("dst_fall_back_two_symbols.csv", [line(t, i, s) for i, t in enumerate(fall) for s in ("SPY", "QQQ")])
    # newest first, as many exchange exports are
    newest = [line(t, i, "SPY") for i, t in enumerate(fall)][::-1]
    csv("dst_fall_back_newest_first.csv", newest)
    epoch = []
    for i in range(N):
        s = int(minute("2023-05-14", i).tz_localize("UTC").timestamp())
        epoch.append(line(str(s if i % 2 == 0 else s * 1000), i))
    csv("epoch_seconds_and_milliseconds.csv", epoch)
    trunc = rows("2023-05-15")
    cut = trunc[-1][: len("2023-05-15 10:49:00,BTCUSD,112.25,11")]  # mid-high, and no final newline
    csv("truncated_last_line.csv", [*trunc[:-1], cut], end="")
    csv("header_only.csv", [])
    (HERE / "empty.csv").write_bytes(b"")
    (HERE / "binary_named.csv").write_bytes(random.Random(20230518).randbytes(3000))
    csv("utf8_bom.csv", rows("2023-05-19"), prefix=b"\xef\xbb\xbf")
    csv("windows_line_endings.csv", rows("2023-05-20"), newline="\r\n", end="\r\n")
    quoted = []
    for i in range(N):
        o, h, lo, c = (x * 10 for x in bar(i)[:4])
        quoted.append(
            f'{minute("2023-05-21", i):%Y-%m-%d %H:%M:%S},BTCUSD,"{o:,.2f}","{h:,.2f}","{lo:,.2f}",'
            f'"{c:,.2f}","{(10 + i) * 100:,}"'
        )
    csv("quoted_thousands.csv", quoted)
    csv("symbol_21_chars.csv", rows("2023-05-22", r9={"symbol": "BTCUSDPERPETUALSWAP21"}))
    csv("symbol_sql_injection.csv", rows("2023-05-23", r14={"symbol": "X'; DROP TABLE modules;--"}))
    csv("value_too_large.csv", rows("2023-05-24", r33={"high": "1e30"}))
    wrong = rows("2023-05-25")
    wrong[11] += ",7"
    wrong[38] = wrong[38].rsplit(",", 1)[0]
    csv("wrong_field_count.csv", wrong)
    good = pd.DataFrame(
        [(minute("2023-05-26", i).tz_localize("UTC"), "BTCUSD", *bar(i)) for i in range(N)],
        columns=["timestamp", "symbol", "open", "high", "low", "close", "volume"],
    )
    buf = io.BytesIO()
    good.to_parquet(buf, index=False)
    data = buf.getvalue()
    (HERE / "half_written.parquet").write_bytes(data[: len(data) * 2 // 3])
    csv(
        "too_many_bad_rows.csv",
        rows(
            "2023-05-27",
            r3={"volume": -1},
            r13={"volume": -1},
            r23={"volume": -1},
            r33={"volume": -1},
            r43={"high": "90.00"},
        ),
    )
    csv("unparseable_timestamp.csv", rows("2023-05-28", r22={"ts": "2023-05-28 10:2?:00"}))
    records = []
    for i in range(N):
        o, h, lo, c, v = bar(i)
        records.append(
            {
                "time": f"{minute('2023-05-29', i):%Y-%m-%dT%H:%M:%SZ}",
                "symbol": "ETHUSD",
                "open": o,
                "high": h,
                "low": lo,
                "close": None if i == 16 else c,
                "volume": v,
            }
        )
    (HERE / "null_close.json").write_text(json.dumps(records, indent=1) + "\n")
    nan_close = good.assign(timestamp=[minute("2023-05-30", i).tz_localize("UTC") for i in range(N)])
    nan_close.loc[20, "close"] = float("nan")
    nan_close.to_parquet(HERE / "nan_close.parquet", index=False)
    # one bar and 8 MB of blank lines, gzipped to 8 KB: a ratio far over TIS_MAX_COMPRESSION_RATIO (200)
    bomb = (HEADER + "\n" + line("2023-05-31 10:00:00", 0) + "\n").encode() + b"\n" * (8 << 20)
    (HERE / "gzip_bomb.csv.gz").write_bytes(gzip.compress(bomb, compresslevel=9, mtime=0))
    csv("timestamp_after_2262.csv", rows("2023-06-01", r20={"ts": "2300-06-01 10:20:00"}))
    csv("timestamp_before_1677.csv", rows("2023-06-02", r30={"ts": "1600-06-02 10:30:00"}))
    csv("symbol_long_s.csv", rows("2023-06-03", r5={"symbol": "btcu\u017fd"}))
    csv("row_before_partition_start.csv", rows("2023-06-04", r10={"ts": "1970-01-01 10:10:00"}))
    csv("volume_nine_decimals.csv", rows("2023-06-05", r15={"volume": "0.000000001"}))


if __name__ == "__main__":
    main()
