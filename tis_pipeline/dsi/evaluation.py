"""Out-of-sample quality of the DSI evidence against forward returns, and a naive baseline.

The scores are walk-forward by construction (every expert, count and weight at t uses bars <= t and labels
elapsed before t), so every scored bar is out of sample.  Signal = ``2 mx_evidence - 1`` (P(up) mapped to
[-1, 1]); forward return = ``close_{t+h} / close_t - 1`` within the symbol, counted only when that h-th bar
falls on the bar's UTC day or the next one (a bar whose symbol then pauses for days has none); baseline =
sign of the last 1-bar return. Where the scores carry ``mx_confirm``, the same figures on the confirmed bars
alone show what confirmation adds.

Figures over a range of days:

* ``n`` and the hit rates are pooled over every bar of the range (counts, so exact piece by piece);
* ``ic`` (and ``naive_ic``, ``confirmed_ic``) is the mean of the daily information coefficients: each UTC
  day's Spearman rank correlation over its bars, averaged over the days that have one (``ic_days`` of them;
  ``ic_std`` their standard deviation, ddof 1). The quant's usual "mean daily IC", and what lets a range of
  any length be evaluated in the memory of two days (``OutOfSample``) instead of a rank over every bar.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DAY_NS = 86_400 * 10**9  # a bar's UTC day: its epoch nanoseconds // DAY_NS


def _aligned(scores: pd.DataFrame, bars: pd.DataFrame, horizon: int, warmup: int) -> pd.DataFrame:
    b = bars[["symbol", "timestamp", "close"]].sort_values(["symbol", "timestamp"], kind="stable")
    b = b.assign(timestamp=pd.DatetimeIndex(b["timestamp"]).as_unit("ns").asi8).reset_index(drop=True)
    b["day"] = b["timestamp"].to_numpy() // DAY_NS
    g = b.groupby("symbol", sort=False)["close"]
    ahead_day = b.groupby("symbol", sort=False)["day"].shift(-horizon).to_numpy(dtype="float64")
    b["fwd"] = (g.shift(-horizon) / b["close"] - 1.0).where(ahead_day <= b["day"].to_numpy() + 1)
    b["last_ret"] = b["close"] / g.shift(1) - 1.0
    b = b[g.cumcount() >= warmup]
    s = scores[["symbol", "timestamp", "mx_evidence", *(["mx_confirm"] if "mx_confirm" in scores else [])]]
    s = s.assign(timestamp=pd.DatetimeIndex(s["timestamp"]).as_unit("ns").asi8)
    m = s.merge(b, on=["symbol", "timestamp"], how="inner")
    m["signal"] = 2.0 * m["mx_evidence"] - 1.0
    m["naive"] = np.sign(m["last_ret"])
    return m[np.isfinite(m["fwd"]) & np.isfinite(m["naive"])]


def _ic(signal: pd.Series, fwd: pd.Series) -> float:
    from scipy.stats import spearmanr  # scipy costs ~1 s to import: only where figures are computed

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


def _daily(values: list[float]) -> tuple[float, int, float]:
    """(mean, days, standard deviation with ddof 1) of the finite daily values, in day order."""
    v = np.array([x for x in values if np.isfinite(x)], dtype="float64")
    mean = float(np.mean(v)) if len(v) else float("nan")
    return mean, len(v), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")


def _figures(m: pd.DataFrame, horizon: int) -> dict:
    """The figures of ``evaluate`` from the aligned rows (day, signal, fwd, naive and perhaps mx_confirm)."""
    days = [part for _, part in m.groupby("day", sort=True)]
    ic, ic_days, ic_std = _daily([_ic(d["signal"], d["fwd"]) for d in days])
    out = {
        "horizon": horizon,
        "n": len(m),
        "ic": ic,
        "ic_days": ic_days,
        "ic_std": ic_std,
        "hit_rate": _hit(m["signal"], m["fwd"]),
        "naive_ic": _daily([_ic(d["naive"], d["fwd"]) for d in days])[0],
        "naive_hit_rate": _hit(m["naive"], m["fwd"]),
    }
    if "mx_confirm" in m:
        # mx_confirm as a filter: does the evidence's sign call the forward return better on confirmed bars?
        confirmed = m["mx_confirm"].fillna(False).astype(bool)
        daily_confirmed = [d[d["mx_confirm"].fillna(False).astype(bool)] for d in days]
        out |= {
            "confirmed_n": int(confirmed.sum()),
            "confirmed_ic": _daily([_ic(d["signal"], d["fwd"]) for d in daily_confirmed])[0],
            "confirmed_hit_rate": _hit(m.loc[confirmed, "signal"], m.loc[confirmed, "fwd"]),
            "unconfirmed_hit_rate": _hit(m.loc[~confirmed, "signal"], m.loc[~confirmed, "fwd"]),
        }
    return out


_NO_SIGN = np.int8(2)  # the naive sign of a bar without a previous bar


@dataclass
class _Piece:
    """What ``OutOfSample`` keeps of a piece's bars until their days are evaluated (12 bytes a bar and the
    day): the evidence as an integer (mx_evidence is a multiple of 0.01: exactly k / 100), the naive sign, the
    forward return (filled in when the h-th successor arrives), the confirmation, whether the bar is past its
    symbol's warm-up, and its UTC day."""

    code: np.ndarray
    naive: np.ndarray
    fwd: np.ndarray
    confirm: np.ndarray
    warm: np.ndarray
    day: np.ndarray


@dataclass
class _Pooled:
    """The range's counts: bars evaluated, and hits / calls of each hit rate."""

    n: int = 0
    confirmed_n: int = 0
    hits: dict[str, list[int]] = field(
        default_factory=lambda: {k: [0, 0] for k in ("all", "naive", "confirmed", "unconfirmed")}
    )


class OutOfSample:
    """``evaluate(scored, scored, horizon, warmup)`` of a range scored piece by piece: ``add`` each piece of
    scores (symbol, timestamp, close, mx_evidence, mx_confirm) in the order the one frame would hold them,
    ``result()`` gives the very same dict, bit for bit, in the memory of about two days of bars whatever the
    range's length.

    Per piece, each symbol's forward return (h bars on) and last return come from its own bars and the last
    ``horizon`` bars of the symbol carried from earlier pieces; a carried bar's forward return is filled in
    when its h-th successor arrives, if that is on the bar's day or the next. So a day is complete once a
    piece two days later arrives: its daily figures are computed then (the rank correlations, the hit counts)
    and its bars dropped. Pieces must come in day order (the days of a range do), and a symbol's bars in time
    order.
    """

    def __init__(self, horizon: int = 5, warmup: int = 0) -> None:
        self.horizon, self.warmup = horizon, warmup
        self._pending = pd.DataFrame(
            {
                "symbol": pd.Series(dtype=object),
                "slot": pd.Series(dtype="int64"),
                "close": pd.Series(dtype="f8"),
                "day": pd.Series(dtype="int64"),
            }
        )
        self._last_ts: dict[str, int] = {}
        self._seen = pd.Series(dtype="int64")  # bars per symbol so far
        self._starts: list[int] = []  # first slot of each piece ever added
        self._pieces: dict[int, _Piece] = {}  # the pieces with days not yet evaluated, by number
        self._with_confirm = True
        self._n = 0
        self._last_day: int | None = None  # the latest day added
        self._done_day: int | None = None  # days up to this one are evaluated
        self._daily: dict[str, list[float]] = {"ic": [], "naive_ic": [], "confirmed_ic": []}
        self._pooled = _Pooled()

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
        day = ts // DAY_NS
        if self._done_day is not None and int(day.min()) <= self._done_day:
            raise ValueError("pieces out of day order: a day already evaluated got more bars")
        codes, names = pd.factorize(symbol)
        order = np.lexsort((ts, codes))
        new = pd.DataFrame(
            {
                "symbol": symbol[order],
                "slot": self._n + order,
                "close": scores["close"].to_numpy(np.float64)[order],
                "day": day[order],
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
        # grouped by the symbols' integer codes (one factorisation of the strings, not one per groupby)
        by = pd.factorize(ext["symbol"])[0]
        perm = np.argsort(by, kind="stable")
        ext = ext.iloc[perm].reset_index(drop=True)
        is_new, by = is_new[perm], by[perm]
        g = ext.groupby(by, sort=False)["close"]
        ahead_day = ext.groupby(by, sort=False)["day"].shift(-h).to_numpy(dtype="float64")
        # the h-th bar on a later day than the next: no forward return
        fwd = np.where(ahead_day <= ext["day"].to_numpy() + 1, (g.shift(-h) / ext["close"] - 1.0), np.nan)
        last_ret = (ext["close"] / g.shift(1) - 1.0).to_numpy()
        # the carried bars' forward returns, where they are known now (and their piece not yet evaluated)
        old = ~is_new & ~np.isnan(fwd)
        if old.any():
            slots, values = ext["slot"].to_numpy()[old], fwd[old]
            piece = np.searchsorted(self._starts, slots, "right") - 1
            for k in np.unique(piece).tolist():
                if k in self._pieces:
                    at = piece == k
                    self._pieces[k].fwd[slots[at] - self._starts[k]] = values[at]
        # the new bars, back in the order they came
        slot = ext["slot"].to_numpy()[is_new] - self._n
        fresh = ext[is_new]
        seen = self._seen.reindex(fresh["symbol"]).fillna(0).to_numpy(np.int64)
        count = seen + fresh.groupby(by[is_new], sort=False).cumcount().to_numpy()
        sign = np.sign(last_ret[is_new])
        arrays = {}
        for key, dtype, values in (
            ("fwd", np.float64, fwd[is_new]),
            ("naive", np.int8, np.where(np.isnan(sign), _NO_SIGN, sign)),
            ("warm", bool, count >= self.warmup),
        ):
            arrays[key] = np.empty(n, dtype)
            arrays[key][slot] = values
        confirm = scores["mx_confirm"] if "mx_confirm" in scores else pd.Series(False, index=scores.index)
        self._pieces[len(self._starts)] = _Piece(
            code=code.astype(np.int8),
            confirm=confirm.fillna(False).to_numpy(bool),
            # a piece of one day (as the run's are) holds its day once, not once a bar
            day=np.broadcast_to(np.int32(day[0]), n) if day.min() == day.max() else day.astype(np.int32),
            **arrays,
        )
        self._starts.append(self._n)
        self._n += n
        counts = fresh.groupby("symbol", sort=False).size()
        self._seen = self._seen.add(counts, fill_value=0).astype("int64")
        self._pending = pd.concat(
            [
                self._pending[~carried],
                ext.groupby(by, sort=False).tail(h)[["symbol", "slot", "close", "day"]],
            ],
            ignore_index=True,
        )
        self._last_day = max(int(day.max()), self._last_day if self._last_day is not None else -(2**62))
        self._evaluate_days(upto=self._last_day - 2)  # a day's forward returns end on the next day

    @property
    def bars_held(self) -> int:
        """Bars kept for days not yet evaluated (at most about two days' worth)."""
        return sum(len(p.day) for p in self._pieces.values())

    def _evaluate_days(self, upto: int) -> None:
        """The daily figures and pooled counts of every day up to ``upto`` not yet evaluated, a day at a time
        (its bars in the order they came, piece after piece); the pieces whose days are all evaluated are
        dropped before their last day is ranked, so the memory is that of the pieces and one day's evaluated
        bars (``_add_day``), not of copies of every due bar."""
        after = self._done_day
        due_days: set[int] = set()
        for p in self._pieces.values():
            due = p.day <= upto
            if after is not None:
                due &= p.day > after
            due_days.update(np.unique(p.day[due]).tolist())
        for day in sorted(due_days):
            parts = []
            for p in self._pieces.values():
                on = (p.day == day) & p.warm & np.isfinite(p.fwd) & (p.naive != _NO_SIGN)
                if on.any():
                    parts.append({name: getattr(p, name)[on] for name in ("code", "naive", "fwd", "confirm")})
            if day == max(due_days):
                self._drop_pieces_up_to(upto)
            if parts:
                # an array at a time, each let go of its pieces' parts as it is made
                bars = {name: np.concatenate([d.pop(name) for d in parts]) for name in list(parts[0])}
                del parts
                self._add_day(bars)
        self._done_day = upto
        self._drop_pieces_up_to(upto)

    def _drop_pieces_up_to(self, upto: int) -> None:
        for k in [k for k, p in self._pieces.items() if (p.day <= upto).all()]:
            del self._pieces[k]

    def _add_day(self, d: dict[str, np.ndarray]) -> None:
        """One day's rank correlations and its hit counts, from ``d`` (its bars' arrays, taken over: the
        forward returns are let go once counted and ranked, before the ranks are laid out for the rank
        correlations, and ranked once for the evidence and the naive sign)."""
        fwd, code, naive, confirmed = d.pop("fwd"), d["code"], d["naive"], d["confirm"]
        side = np.sign(code.astype(np.int16) - 50).astype(np.int8)  # sign(2 k / 100 - 1), exactly
        pooled = self._pooled
        pooled.n += len(fwd)
        _count_hits(pooled.hits["all"], side, fwd)
        _count_hits(pooled.hits["naive"], naive, fwd)
        pooled.confirmed_n += int(confirmed.sum())
        confirmed_ic = _coded_ic(code[confirmed], fwd[confirmed])
        _count_hits(pooled.hits["confirmed"], side[confirmed], fwd[confirmed])
        _count_hits(pooled.hits["unconfirmed"], side[~confirmed], fwd[~confirmed])
        del side
        twice_ranks = _twice_ranks_unless_constant(fwd)
        del fwd
        self._daily["ic"].append(_levels_ic(code, twice_ranks))
        self._daily["naive_ic"].append(_levels_ic(naive, twice_ranks))
        self._daily["confirmed_ic"].append(confirmed_ic)

    def result(self) -> dict:
        """``evaluate``'s dict, bit for bit: the days not yet evaluated are evaluated now. The rank
        correlation is computed as ``spearmanr`` computes it (average ranks, then ``np.corrcoef`` of the ranks
        laid out as it lays them out), with the evidence's ranks from the counts of its 101 levels."""
        if not self._n:
            return {}
        if self._last_day is not None:
            self._evaluate_days(upto=self._last_day)
        pooled = self._pooled
        ic, ic_days, ic_std = _daily(self._daily["ic"])
        out = {
            "horizon": self.horizon,
            "n": pooled.n,
            "ic": ic,
            "ic_days": ic_days,
            "ic_std": ic_std,
            "hit_rate": _rate(pooled.hits["all"]),
            "naive_ic": _daily(self._daily["naive_ic"])[0],
            "naive_hit_rate": _rate(pooled.hits["naive"]),
        }
        if self._with_confirm:
            out |= {
                "confirmed_n": pooled.confirmed_n,
                "confirmed_ic": _daily(self._daily["confirmed_ic"])[0],
                "confirmed_hit_rate": _rate(pooled.hits["confirmed"]),
                "unconfirmed_hit_rate": _rate(pooled.hits["unconfirmed"]),
            }
        return out


def _count_hits(into: list[int], side: np.ndarray, fwd: np.ndarray) -> None:
    """Adds the calls (non-zero sign and forward return) and the hits among them to ``into``."""
    m = (side != 0) & (fwd != 0)
    into[0] += int((side[m] == np.sign(fwd[m])).sum())
    into[1] += int(m.sum())


def _rate(counts: list[int]) -> float:
    """``_hit``'s share from pooled counts: the mean of the hits' booleans is their count over the calls."""
    return counts[0] / counts[1] if counts[1] else float("nan")


_BLOCK = 1 << 20  # elements per block of the rank and level look-ups: their index temporaries stay small


def _twice_average_ranks(values: np.ndarray) -> np.ndarray:
    """Twice ``scipy.stats.rankdata(values)``'s 'average' ranks, as integers: a tie over the (0-based) sorted
    positions a..b has the rank (a + b + 2) / 2, so twice it is a + b + 2, exactly; in the memory of one sort
    order and the result (rankdata holds four or five float arrays of the values' size)."""
    n = len(values)
    sorter = np.argsort(values)
    new_value = np.empty(n, bool)  # whether the sorted position starts a tie (a new value)
    new_value[:1] = True
    for a in range(1, n, _BLOCK):
        b = min(a + _BLOCK, n)
        np.not_equal(values[sorter[a:b]], values[sorter[a - 1 : b - 1]], out=new_value[a:b])
    starts = np.flatnonzero(new_value)
    del new_value
    ends = np.r_[starts[1:], n]  # one past each tie's last position
    tie_rank = starts + ends + 1  # a + b + 2 with b = end - 1
    twice = np.empty(n, np.int32 if n < 2**30 else np.int64)
    for a in range(0, n, _BLOCK):
        position = np.arange(a, min(a + _BLOCK, n))
        twice[sorter[position]] = tie_rank[np.searchsorted(starts, position, "right") - 1]
    return twice


def _twice_ranks_unless_constant(fwd: np.ndarray) -> np.ndarray | None:
    """``_twice_average_ranks(fwd)``, or None where ``_ic`` has no rank correlation whatever the signal
    (fewer than three bars, or every forward return the same)."""
    if len(fwd) < 3 or fwd.min() == fwd.max():
        return None
    return _twice_average_ranks(fwd)


def _coded_ic(levels: np.ndarray, fwd: np.ndarray) -> float:
    """``_ic`` of a signal given by integer levels (in the signal's order) against ``fwd`` (finite)."""
    return _levels_ic(levels, _twice_ranks_unless_constant(fwd))


def _levels_ic(levels: np.ndarray, twice_fwd_ranks: np.ndarray | None) -> float:
    """``_ic`` of a signal given by integer levels against forward returns given by twice their ranks
    (``_twice_ranks_unless_constant``)."""
    if twice_fwd_ranks is None:
        return float("nan")
    low = int(levels.min())
    counts = np.bincount(levels.astype(np.int64) - low)
    if np.count_nonzero(counts) < 2:
        return float("nan")
    upto = np.cumsum(counts)
    average_rank = 0.5 * (upto + (upto - counts) + 1)  # rankdata's 'average' ranks of each level, exact
    ranked = np.empty((2, len(levels)))  # laid out as spearmanr's apply_along_axis leaves its ranks
    for a in range(0, len(levels), _BLOCK):
        b = a + _BLOCK
        np.take(average_rank, levels[a:b].astype(np.int64) - low, out=ranked[0, a:b])
        np.multiply(twice_fwd_ranks[a:b], 0.5, out=ranked[1, a:b])
    return _correlation_of_rows(ranked)


def _correlation_of_rows(x: np.ndarray) -> float:
    """``np.corrcoef(x.T, rowvar=False)[1, 0]`` of a C-contiguous (2, n) float64 ``x``, computed in ``x``
    (destroyed) instead of in a copy: ``np.cov`` copies ``x.T`` keeping its layout, i.e. into an array laid
    out as ``x``, then centres it and takes ``dot(X, X.T)``; the same operations on the same layout give the
    same floats."""
    avg = x.mean(axis=1)
    x -= avg[:, None]
    c = np.dot(x, x.T.conj())
    c *= np.true_divide(1, x.shape[1] - 1)
    stddev = np.sqrt(np.diag(c).real)
    c /= stddev[:, None]
    c /= stddev[None, :]
    np.clip(c.real, -1, 1, out=c.real)
    return float(c[1, 0])
