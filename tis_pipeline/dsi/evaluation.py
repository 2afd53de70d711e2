"""Out-of-sample quality of the DSI evidence against forward returns, and a naive baseline.

The scores are walk-forward by construction (every expert, count and weight at t uses bars <= t and labels
elapsed before t), so every scored bar is out of sample.  Signal = ``2 mx_evidence - 1`` (P(up) mapped to
[-1, 1]); forward return = ``close_{t+h} / close_t - 1`` within the symbol; baseline = sign of the last 1-bar
return. Where the scores carry ``mx_confirm``, the same figures on the confirmed bars alone show what
confirmation adds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr


def _aligned(scores: pd.DataFrame, bars: pd.DataFrame, horizon: int, warmup: int) -> pd.DataFrame:
    b = bars[["symbol", "timestamp", "close"]].sort_values(["symbol", "timestamp"], kind="stable")
    b = b.assign(timestamp=pd.DatetimeIndex(b["timestamp"]).as_unit("ns").asi8).reset_index(drop=True)
    g = b.groupby("symbol", sort=False)["close"]
    b["fwd"] = g.shift(-horizon) / b["close"] - 1.0
    b["last_ret"] = b["close"] / g.shift(1) - 1.0
    b = b[g.cumcount() >= warmup]
    s = scores[["symbol", "timestamp", "mx_evidence", *(["mx_confirm"] if "mx_confirm" in scores else [])]]
    s = s.assign(timestamp=pd.DatetimeIndex(s["timestamp"]).as_unit("ns").asi8)
    m = s.merge(b, on=["symbol", "timestamp"], how="inner")
    m["signal"] = 2.0 * m["mx_evidence"] - 1.0
    m["naive"] = np.sign(m["last_ret"])
    return m[np.isfinite(m["fwd"]) & np.isfinite(m["naive"])]


def _ic(signal: pd.Series, fwd: pd.Series) -> float:
    if len(signal) < 3 or signal.nunique() < 2 or fwd.nunique() < 2:
        return float("nan")
    return float(spearmanr(signal, fwd).statistic)


def _hit(signal: pd.Series, fwd: pd.Series) -> float:
    m = (signal != 0) & (fwd != 0)
    return float((np.sign(signal[m]) == np.sign(fwd[m])).mean()) if m.any() else float("nan")


def information_coefficient(
    scores: pd.DataFrame, bars: pd.DataFrame, horizon: int = 5, warmup: int = 0
) -> float:
    """Spearman rank correlation between 2 mx_evidence - 1 and the forward h-bar return."""
    m = _aligned(scores, bars, horizon, warmup)
    return _ic(m["signal"], m["fwd"])


def hit_rate(scores: pd.DataFrame, bars: pd.DataFrame, horizon: int = 5, warmup: int = 0) -> float:
    """Share of bars with a non-neutral signal and a non-zero forward return where the signs agree."""
    m = _aligned(scores, bars, horizon, warmup)
    return _hit(m["signal"], m["fwd"])


def naive_information_coefficient(bars: pd.DataFrame, horizon: int = 5, warmup: int = 0) -> float:
    m = _aligned(_neutral(bars), bars, horizon, warmup)
    return _ic(m["naive"], m["fwd"])


def naive_hit_rate(bars: pd.DataFrame, horizon: int = 5, warmup: int = 0) -> float:
    m = _aligned(_neutral(bars), bars, horizon, warmup)
    return _hit(m["naive"], m["fwd"])


def _neutral(bars: pd.DataFrame) -> pd.DataFrame:
    return bars[["symbol", "timestamp"]].assign(mx_evidence=0.5)


def evaluate(scores: pd.DataFrame, bars: pd.DataFrame, horizon: int = 5, warmup: int = 0) -> dict:
    """IC and hit rate of the evidence and of the naive baseline (for asset metadata)."""
    return _figures(_aligned(scores, bars, horizon, warmup), horizon)


def _figures(m: pd.DataFrame, horizon: int) -> dict:
    """The figures of ``evaluate`` from the aligned rows (signal, fwd, naive and perhaps mx_confirm)."""
    out = {
        "horizon": horizon,
        "n": len(m),
        "ic": _ic(m["signal"], m["fwd"]),
        "hit_rate": _hit(m["signal"], m["fwd"]),
        "naive_ic": _ic(m["naive"], m["fwd"]),
        "naive_hit_rate": _hit(m["naive"], m["fwd"]),
    }
    if "mx_confirm" in m:
        # mx_confirm as a filter: does the evidence's sign call the forward return better on confirmed bars?
        confirmed = m["mx_confirm"].fillna(False).astype(bool)
        out |= {
            "confirmed_n": int(confirmed.sum()),
            "confirmed_ic": _ic(m.loc[confirmed, "signal"], m.loc[confirmed, "fwd"]),
            "confirmed_hit_rate": _hit(m.loc[confirmed, "signal"], m.loc[confirmed, "fwd"]),
            "unconfirmed_hit_rate": _hit(m.loc[~confirmed, "signal"], m.loc[~confirmed, "fwd"]),
        }
    return out


_NO_SIGN = np.int8(2)  # the naive sign of a bar without a previous bar


class OutOfSample:
    """``evaluate(scored, scored, horizon, warmup)`` of a range scored piece by piece: ``add`` each piece of
    scores (symbol, timestamp, close, mx_evidence, mx_confirm) in the order the one frame would hold them,
    ``result()`` gives the very same dict, bit for bit.

    Per piece, each symbol's forward return (h bars on) and last return come from its own bars and the last
    ``horizon`` bars of the symbol carried from earlier pieces; a carried bar's forward return is filled in
    when its h-th successor arrives. Nothing of a bar is kept but what the figures need: its evidence as an
    integer (mx_evidence is a multiple of 0.01: exactly k / 100), the naive sign, the forward return, the
    confirmation and whether it is past the symbol's warm-up -- 12 bytes a bar, against the ~100 of the
    frames ``evaluate`` aligns (the rank correlation needs every bar's values at the end). A symbol's bars
    must come in time order across pieces, as the days of a range do.
    """

    def __init__(self, horizon: int = 5, warmup: int = 0) -> None:
        self.horizon, self.warmup = horizon, warmup
        self._pending = pd.DataFrame(
            {
                "symbol": pd.Series(dtype=object),
                "slot": pd.Series(dtype="int64"),
                "close": pd.Series(dtype="f8"),
            }
        )
        self._last_ts: dict[str, int] = {}
        self._seen = pd.Series(dtype="int64")  # bars per symbol so far
        self._starts: list[int] = []  # first slot of each piece
        self._code: list[np.ndarray] = []
        self._naive: list[np.ndarray] = []
        self._fwd: list[np.ndarray] = []
        self._confirm: list[np.ndarray] = []
        self._warm: list[np.ndarray] = []
        self._with_confirm = True
        self._n = 0

    def add(self, scores: pd.DataFrame) -> None:
        n, h = len(scores), self.horizon
        if not n:
            return
        evidence = scores["mx_evidence"].to_numpy(np.float64)
        code = np.rint(evidence * 100.0)
        if not np.array_equal(code / 100.0, evidence):
            raise ValueError("mx_evidence must be a multiple of 0.01 as np.round(x, 2) leaves it")
        self._with_confirm &= "mx_confirm" in scores
        symbol = scores["symbol"].astype(str).to_numpy(object)
        ts = pd.DatetimeIndex(scores["timestamp"]).as_unit("ns").asi8
        codes, names = pd.factorize(symbol)
        order = np.lexsort((ts, codes))
        new = pd.DataFrame(
            {
                "symbol": symbol[order],
                "slot": self._n + order,
                "close": scores["close"].to_numpy(np.float64)[order],
            }
        )
        first = np.r_[True, codes[order][1:] != codes[order][:-1]]
        for name, t in zip(new["symbol"][first], ts[order][first].tolist(), strict=True):
            if t <= self._last_ts.get(name, np.iinfo(np.int64).min):
                raise ValueError(f"bars of {name} out of time order across pieces")
        last = np.r_[first[1:], True]
        self._last_ts.update(zip(new["symbol"][last], ts[order][last].tolist(), strict=True))
        carried = self._pending["symbol"].isin(names)
        ext = pd.concat([self._pending[carried], new], ignore_index=True)
        is_new = np.r_[np.zeros(int(carried.sum()), bool), np.ones(n, bool)]
        by = pd.Series(pd.factorize(ext["symbol"])[0])
        perm = np.argsort(by.to_numpy(), kind="stable")
        ext = ext.iloc[perm].reset_index(drop=True)
        is_new = is_new[perm]
        g = ext.groupby("symbol", sort=False)["close"]
        fwd = (g.shift(-h) / ext["close"] - 1.0).to_numpy()
        last_ret = (ext["close"] / g.shift(1) - 1.0).to_numpy()
        # the carried bars' forward returns, where they are known now
        old = ~is_new & ~np.isnan(fwd)
        if old.any():
            slots, values = ext["slot"].to_numpy()[old], fwd[old]
            piece = np.searchsorted(self._starts, slots, "right") - 1
            for k in np.unique(piece).tolist():
                at = piece == k
                self._fwd[k][slots[at] - self._starts[k]] = values[at]
        # the new bars, back in the order they came
        slot = ext["slot"].to_numpy()[is_new] - self._n
        fresh = ext[is_new]
        seen = self._seen.reindex(fresh["symbol"]).fillna(0).to_numpy(np.int64)
        count = seen + fresh.groupby("symbol", sort=False).cumcount().to_numpy()
        sign = np.sign(last_ret[is_new])
        arrays = {
            "fwd": (self._fwd, np.float64, fwd[is_new]),
            "naive": (self._naive, np.int8, np.where(np.isnan(sign), _NO_SIGN, sign)),
            "warm": (self._warm, bool, count >= self.warmup),
        }
        for target, dtype, values in arrays.values():
            out = np.empty(n, dtype)
            out[slot] = values
            target.append(out)
        self._code.append(code.astype(np.int8))
        confirm = scores["mx_confirm"] if "mx_confirm" in scores else pd.Series(False, index=scores.index)
        self._confirm.append(confirm.fillna(False).to_numpy(bool))
        self._starts.append(self._n)
        self._n += n
        counts = fresh.groupby("symbol", sort=False).size()
        self._seen = self._seen.add(counts, fill_value=0).astype("int64")
        self._pending = pd.concat(
            [self._pending[~carried], ext.groupby("symbol", sort=False).tail(h)[["symbol", "slot", "close"]]],
            ignore_index=True,
        )

    def result(self) -> dict:
        """``evaluate``'s dict, bit for bit, computed on the compact arrays: the rank correlation as
        ``spearmanr`` computes it (average ranks, then ``np.corrcoef`` of the ranks laid out as it lays them
        out) with the evidence's ranks from the counts of its 101 levels (no sort) and no aligned frame, so
        that the end of a long range needs ~50 bytes a bar for a moment instead of ~140."""
        if not self._n:
            return {}
        fwd, naive = np.concatenate(self._fwd), np.concatenate(self._naive)
        keep = np.concatenate(self._warm) & np.isfinite(fwd) & (naive != _NO_SIGN)
        fwd, naive = fwd[keep], naive[keep]
        code = np.concatenate(self._code)[keep]
        side = np.sign(code.astype(np.int16) - 50).astype(np.int8)  # sign(2 k / 100 - 1), exactly
        out = {
            "horizon": self.horizon,
            "n": len(fwd),
            "ic": _coded_ic(code, fwd),
            "hit_rate": _coded_hit(side, fwd),
            "naive_ic": _coded_ic(naive, fwd),
            "naive_hit_rate": _coded_hit(naive, fwd),
        }
        if self._with_confirm:
            confirmed = np.concatenate(self._confirm)[keep]
            out |= {
                "confirmed_n": int(confirmed.sum()),
                "confirmed_ic": _coded_ic(code[confirmed], fwd[confirmed]),
                "confirmed_hit_rate": _coded_hit(side[confirmed], fwd[confirmed]),
                "unconfirmed_hit_rate": _coded_hit(side[~confirmed], fwd[~confirmed]),
            }
        return out


def _coded_ic(levels: np.ndarray, fwd: np.ndarray) -> float:
    """``_ic`` of a signal given by integer levels (in the signal's order) against ``fwd`` (finite)."""
    from scipy.stats import rankdata

    if len(levels) < 3 or fwd.min() == fwd.max():
        return float("nan")
    low = int(levels.min())
    counts = np.bincount(levels.astype(np.int64) - low)
    if np.count_nonzero(counts) < 2:
        return float("nan")
    upto = np.cumsum(counts)
    average_rank = 0.5 * (upto + (upto - counts) + 1)  # rankdata's 'average' ranks of each level, exact
    ranked = np.empty((2, len(levels)))  # laid out as spearmanr's apply_along_axis leaves its ranks
    np.take(average_rank, levels.astype(np.int64) - low, out=ranked[0])
    ranked[1] = rankdata(fwd)
    return float(np.corrcoef(ranked.T, rowvar=False)[1, 0])


def _coded_hit(side: np.ndarray, fwd: np.ndarray) -> float:
    """``_hit`` of a signal given by its sign (-1, 0, 1)."""
    m = (side != 0) & (fwd != 0)
    return float((side[m] == np.sign(fwd[m])).mean()) if m.any() else float("nan")
