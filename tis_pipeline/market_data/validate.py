"""The ingest's quarantine decision: which rows of a source are written and which are quarantined (each under
the first rule it breaks), and whether a window has so many bad rows that nothing is written. No Dagster, no
database.

The table's rules come from the quality registry (``tis_pipeline.quality.rules``), beside a few ingest-only
rules on raw input; the share limit is the caller's (settings ``TIS_MAX_QUARANTINE_SHARE``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pandas as pd

from tis_pipeline.market_data.bars import BAR_COLUMNS, PRICE_COLUMNS, lex_steps, rows_apart
from tis_pipeline.quality.evaluate import failing_masks
from tis_pipeline.quality.rules import rule

SYMBOL_PATTERN = r"^[A-Za-z0-9._/:-]{1,20}$"
_SYMBOL_RE = re.compile(SYMBOL_PATTERN)
# numeric(20,8) holds |x| < 10^12
NUMERIC_20_8_LIMIT = 1e12

# Ingest-only rules on raw input, beside the registry's (tis_pipeline.quality.rules) error rules for the table
SYMBOL_FORMAT_RULE = "market_data_1m_symbol_format"
NUMERIC_FIT_RULE = "market_data_1m_values_fit_numeric"
KEY_UNIQUE_RULE = "market_data_1m_key_unique"

# The order a row is judged in: it is quarantined under the first rule it breaks.
QUARANTINE_RULES = (
    SYMBOL_FORMAT_RULE,
    "market_data_1m_timestamp_not_null",
    "market_data_1m_open_not_null",
    "market_data_1m_high_not_null",
    "market_data_1m_low_not_null",
    "market_data_1m_close_not_null",
    "market_data_1m_volume_not_null",
    NUMERIC_FIT_RULE,
    "ck_market_data_1m_prices_positive",
    "ck_market_data_1m_volume_nonnegative",
    "ck_market_data_1m_high_bounds",
    "ck_market_data_1m_low_bounds",
    "market_data_1m_timestamp_aligned",
    "market_data_1m_timestamp_not_future",
    KEY_UNIQUE_RULE,
)

RULE_MESSAGES = {
    SYMBOL_FORMAT_RULE: (
        "symbol is empty, longer than 20 characters or has characters outside [A-Za-z0-9._/:-]"
    ),
    NUMERIC_FIT_RULE: "a value does not fit numeric(20,8) (|x| >= 1e12)",
    KEY_UNIQUE_RULE: "the same symbol and minute appear more than once",
}
# The registry's rules no clean row can break: validate_bars quarantines every row that breaks one of them
# (the key rule by _duplicates, which keeps at most one row of a key; a missing symbol breaks the symbol
# format). Not the not-in-the-future rule: it is judged against a clock that has moved on by the time the rows
# are judged.
ENFORCED_RULES = frozenset(
    {"market_data_1m_symbol_not_null"}
    | set(QUARANTINE_RULES) - {SYMBOL_FORMAT_RULE, NUMERIC_FIT_RULE, "market_data_1m_timestamp_not_future"}
)
_DUPLICATE_MESSAGE = "an identical row for this symbol and minute came earlier (one copy kept)"
_CONFLICT_MESSAGE = "the same symbol and minute appear with different values (no copy kept)"


@dataclass
class Validated:
    clean: pd.DataFrame  # BAR_COLUMNS + volume_missing, safe to write
    quarantine: pd.DataFrame  # quarantine table rows
    counts: dict[str, int]  # rule -> rows quarantined
    enforced: frozenset[str] = (
        frozenset()
    )  # registry rules no row of ``clean`` breaks (evaluate_frame's enforced=)

    @staticmethod
    def concat(pieces: list[Validated]) -> Validated:
        """One result for pieces validated apart (disjoint days: no row of one can repeat a row of
        another): ``ValidatedTally``'s counts, enforced rules and quarantine, with the clean rows joined."""
        tally = ValidatedTally()
        for piece in pieces:
            tally.add(piece)
        if len(pieces) == 1:
            return pieces[0]
        return Validated(
            clean=pd.concat([p.clean for p in pieces], ignore_index=True),
            quarantine=tally.quarantine(),
            counts=tally.counts(),
            enforced=tally.enforced(),
        )


class ValidatedTally:
    """What ``Validated.concat`` says of pieces validated apart, kept as they come (``add``) without their
    clean rows: the rows quarantined per rule, the rules no clean row breaks, the quarantine rows (few); and,
    for the share limit (``enforce_share_limit``), the clean rows' count per UTC day of the pieces not judged
    yet.

    A rule is enforced when every piece enforces it; the key rule only while each piece's clean times of each
    symbol are all later than that symbol's in the pieces before (otherwise a key could be in two pieces):
    pieces of later days, or of other symbols of the same day, keep it.
    """

    def __init__(self) -> None:
        self.pieces = 0
        self._quarantine: list[pd.DataFrame] = []
        self._counts: dict[str, int] = {}
        self._enforced: frozenset[str] = frozenset()
        self._last_time: dict[str, int] = {}  # per symbol, its latest clean time so far (µs since the epoch)
        self._apart = True
        self._only: Validated | None = None  # the first piece, without its clean rows
        # the pieces since the last enforce_share_limit: where they start in _quarantine, the counts per rule
        # before them, their clean rows per UTC day
        self._unjudged_from = 0
        self._counts_judged: dict[str, int] = {}
        self._unjudged_days: dict[object, int] = {}

    def add(self, piece: Validated) -> None:
        self._quarantine.append(piece.quarantine)
        for name, count in piece.counts.items():
            self._counts[name] = self._counts.get(name, 0) + count
        for day, n in _utc_date_counts(piece.clean["timestamp"]).items():
            self._unjudged_days[day] = self._unjudged_days.get(day, 0) + int(n)
        self._enforced = piece.enforced if not self.pieces else self._enforced & piece.enforced
        if self._apart and len(piece.clean):
            self._apart = self._later_than_before(piece.clean)
        if not self.pieces:
            # no clean rows: a view of none would still keep the piece's columns alive
            self._only = Validated(rows_apart(piece.clean, 0), piece.quarantine, piece.counts, piece.enforced)
        self.pieces += 1

    def _later_than_before(self, clean: pd.DataFrame) -> bool:
        """Whether each symbol's clean times in ``clean`` are later than all of its times in the pieces
        before; the symbols' latest times updated."""
        times = clean["timestamp"]
        codes, names = pd.factorize(clean["symbol"])
        if (codes < 0).any() or times.hasnans:
            return False
        ts = times.array.as_unit("us").asi8
        first = np.full(len(names), np.iinfo(np.int64).max)
        last = np.full(len(names), np.iinfo(np.int64).min)
        np.minimum.at(first, codes, ts)
        np.maximum.at(last, codes, ts)
        apart = True
        for name, low, high in zip(names.tolist(), first.tolist(), last.tolist(), strict=True):
            before = self._last_time.get(name)
            if before is not None:
                apart &= before < low
            self._last_time[name] = high if before is None else max(high, before)
        return apart

    def _one(self) -> Validated | None:
        if not self.pieces:
            raise ValueError("no pieces to join")
        return self._only if self.pieces == 1 else None

    def counts(self) -> dict[str, int]:
        one = self._one()
        if one is not None:
            return one.counts
        return {name: self._counts[name] for name in QUARANTINE_RULES if name in self._counts}

    def enforced(self) -> frozenset[str]:
        one = self._one()
        if one is not None:
            return one.enforced
        return self._enforced if self._apart else self._enforced - {KEY_UNIQUE_RULE}

    def quarantine(self) -> pd.DataFrame:
        one = self._one()
        if one is not None:
            return one.quarantine
        return pd.concat(self._quarantine, ignore_index=True)

    @property
    def unjudged_pieces(self) -> int:
        """Pieces added since the last ``enforce_share_limit``."""
        return len(self._quarantine) - self._unjudged_from

    def enforce_share_limit(self, limit: float) -> None:
        """Raise ``QuarantineShareExceeded`` when a UTC day of the pieces added since the last call has more
        than ``limit`` (a share, 0.05 = 5 %) of its rows quarantined, as if those pieces' rows had been
        validated together; its message names the days and their shares, the rules broken and the first bad
        rows. Call it once the pieces' days are whole: the next pieces are judged apart from these."""
        good = pd.Series(
            list(self._unjudged_days.values()),
            index=pd.Index(list(self._unjudged_days), dtype=object),
            dtype="int64",
        ).sort_index()
        pieces = self._quarantine[self._unjudged_from :]
        quarantine = (
            pieces[0]
            if len(pieces) == 1
            else pd.concat([q for q in pieces if len(q)] or pieces[:1], ignore_index=True)
        )
        counts = {
            name: n
            for name in QUARANTINE_RULES
            if (n := self._counts.get(name, 0) - self._counts_judged.get(name, 0))
        }
        self._unjudged_from = len(self._quarantine)
        self._counts_judged = dict(self._counts)
        self._unjudged_days = {}
        shares = _shares(good, quarantine)
        over = shares[shares > limit]
        if len(over):
            sample = quarantine.head(5)[["source_file", "source_line", "rule"]].to_dict("records")
            raise QuarantineShareExceeded(
                f"{len(over)} partition day(s) have more than {limit:.0%} bad rows "
                f"({', '.join(f'{d}: {s:.1%}' for d, s in over.items())}); nothing was written. "
                f"Rules broken: {counts}. First rows: {sample}",
                counts,
            )


def rule_masks(frame: pd.DataFrame, now: pd.Timestamp) -> dict[str, np.ndarray]:
    """One boolean mask per quarantine rule (True = the row breaks it), vectorised over the frame.

    The table's rules come from the quality registry (``failing_mask``), so ingest, the asset checks and the
    database's CHECK constraints share one definition of each rule.
    """
    symbol_codes, symbols = pd.factorize(frame["symbol"])
    too_large = np.zeros(len(frame), dtype=bool)
    for column in [*PRICE_COLUMNS, "volume"]:
        values = frame[column].to_numpy(dtype="float64")
        with np.errstate(invalid="ignore"):
            too_large |= np.abs(values) >= NUMERIC_20_8_LIMIT  # x >= limit or x <= -limit (NaN: neither)
    masks: dict[str, np.ndarray] = {
        SYMBOL_FORMAT_RULE: _bad_symbols(symbol_codes, symbols),
        NUMERIC_FIT_RULE: too_large,
    }
    registry = [rule(name) for name in QUARANTINE_RULES if name not in masks and name != KEY_UNIQUE_RULE]
    masks.update(failing_masks(frame, registry, now=now))
    masks["_duplicate"], masks["_conflict"] = _duplicates(frame, symbol_codes, len(symbols))
    masks[KEY_UNIQUE_RULE] = masks["_duplicate"] | masks["_conflict"]
    return masks


def _bad_symbols(codes: np.ndarray, symbols: pd.Index) -> np.ndarray:
    """The symbol-format mask, with the pattern run once per distinct symbol (a frame has few)."""
    # Python's re on the few strings: pandas' str.fullmatch costs more to set up than to run here, and the
    # pattern reads the same in both (ASCII classes, anchored at both ends; a non-string never matches)
    pattern = _SYMBOL_RE.fullmatch
    bad = np.array([not (isinstance(s, str) and pattern(s)) for s in symbols], dtype=bool)
    # code -1 (no symbol) picks the appended True: an empty symbol breaks the pattern
    return np.append(bad, True)[codes]


def _duplicates(
    frame: pd.DataFrame, symbol_codes: np.ndarray, n_symbols: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows repeating an earlier identical row of their (symbol, timestamp), and rows of a key whose copies
    differ.

    A missing symbol or timestamp counts as a value (it equals itself), as in ``DataFrame.duplicated``.
    Keys are compared as integers between neighbours in key order; only rows whose key repeats (few, in
    practice) are compared on their values.
    """
    n = len(frame)
    duplicate, conflict = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    timestamps = frame["timestamp"]
    if pd.api.types.is_datetime64_any_dtype(timestamps.dtype):
        ts, nat = timestamps.array.asi8, timestamps.isna().to_numpy()
    else:
        ts, nat = pd.factorize(timestamps, use_na_sentinel=False)[0], np.zeros(n, dtype=bool)
    # missing symbols and times go last, where normalise_bars puts them, so a normalised frame needs no sort
    keys = [np.where(symbol_codes < 0, n_symbols, symbol_codes), nat, ts]
    order = np.arange(n)
    up, same = lex_steps(keys)
    if not (up | same).all():
        order = np.lexsort(keys[::-1])
        up, same = lex_steps([key[order] for key in keys])
    # in key order, a key's rows are neighbours: a row repeats its key when a neighbour has the same one
    repeated_in_order = np.zeros(n, dtype=bool)
    repeated_in_order[1:] |= same
    repeated_in_order[:-1] |= same
    rows = np.sort(order[repeated_in_order])
    if len(rows) == 0:
        return duplicate, conflict
    key_id = np.empty(n, dtype=np.int64)
    key_id[order] = np.cumsum(np.concatenate([[True], ~same]))
    seen = frame.iloc[rows][BAR_COLUMNS].duplicated(keep="first").to_numpy()
    _, key_of_row = np.unique(key_id[rows], return_inverse=True)
    # the first copy of each distinct row counts once: a key with two of them cannot be resolved
    distinct = np.bincount(key_of_row, weights=~seen)
    conflict[rows] = distinct[key_of_row] > 1
    duplicate[rows] = seen & ~conflict[rows]
    return duplicate, conflict


def validate_bars(
    frame: pd.DataFrame, *, now: pd.Timestamp | None = None, partition_date: pd.Timestamp | None = None
) -> Validated:
    """Split normalised bars into clean rows and quarantine rows (each bad row once, under its first rule)."""
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    masks = rule_masks(frame, now)
    # position in QUARANTINE_RULES of the first rule each row breaks; len(QUARANTINE_RULES) = none
    first_rule = np.full(len(frame), len(QUARANTINE_RULES))
    for position, name in enumerate(QUARANTINE_RULES):
        first_rule[masks[name] & (first_rule == len(QUARANTINE_RULES))] = position
    bad = first_rule < len(QUARANTINE_RULES)
    clean_columns = [*BAR_COLUMNS, "volume_missing"]
    clean = (frame.loc[~bad, clean_columns] if bad.any() else frame[clean_columns]).reset_index(drop=True)
    rejected = frame.loc[bad]
    dates = rejected["timestamp"].dt.tz_convert("UTC").dt.date
    if partition_date is not None:
        dates = dates.fillna(partition_date.date())
    quarantine = pd.DataFrame(
        {
            "partition_date": dates,
            "source_file": rejected["source_file"].astype(str),
            "source_line": rejected["source_line"],
            "symbol": rejected["symbol"].astype("object"),
            "timestamp": rejected["timestamp"],
            "raw_values": _raw_json(rejected),
            "rule": np.array(QUARANTINE_RULES, dtype=object)[first_rule[bad]],
        }
    ).reset_index(drop=True)
    messages = {name: RULE_MESSAGES.get(name) or rule(name).description for name in QUARANTINE_RULES}
    quarantine["message"] = quarantine["rule"].map(messages)
    duplicate_kind = np.where(masks["_conflict"][bad], _CONFLICT_MESSAGE, _DUPLICATE_MESSAGE)
    is_key_rule = (quarantine["rule"] == KEY_UNIQUE_RULE).to_numpy()
    quarantine.loc[is_key_rule, "message"] = duplicate_kind[is_key_rule]
    per_rule = np.bincount(first_rule, minlength=len(QUARANTINE_RULES))
    counts = {name: int(per_rule[i]) for i, name in enumerate(QUARANTINE_RULES) if per_rule[i]}
    return Validated(clean=clean, quarantine=quarantine, counts=counts, enforced=ENFORCED_RULES)


SCALE = 8  # numeric(20,8): the digits after the 8th decimal are rounded away when a value is stored


def values_beyond_scale(frame: pd.DataFrame) -> np.ndarray:
    """Per row, how many of its prices and volume have non-zero digits beyond ``SCALE`` decimals (as the
    shortest decimal that reads back as the float: ``1e-09`` has 9, ``100.12345678`` has 8).

    A cheap test on ``x * 10^8`` keeps the few candidates; each distinct candidate is then decided exactly.
    """
    out = np.zeros(len(frame), dtype=np.int64)
    for column in [*PRICE_COLUMNS, "volume"]:
        values = frame[column].to_numpy(dtype="float64")
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = values * 10.0**SCALE
            candidate = np.isfinite(scaled) & (np.abs(scaled - np.rint(scaled)) > 1e-6)
        if not candidate.any():
            continue
        distinct = np.unique(values[candidate])
        lossy = {v for v in distinct.tolist() if _decimals(v) > SCALE}
        out += np.isin(values, list(lossy)) if lossy else 0
    return out


def _decimals(value: float) -> int:
    exponent = Decimal(repr(value)).as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _raw_json(rejected: pd.DataFrame) -> list[str]:
    """Each rejected row as JSON: the parsed values, plus the original text where the reader kept it."""
    if rejected.empty:
        return []
    columns = BAR_COLUMNS + (["raw"] if "raw" in rejected.columns else [])
    view = rejected[columns].copy()
    view["timestamp"] = view["timestamp"].map(lambda t: None if pd.isna(t) else t.isoformat())
    if "raw" in view.columns:
        view["raw"] = view["raw"].where(view["raw"].map(lambda r: isinstance(r, str)), None)
    # pandas writes NaN as null and escapes every string: safe JSON for any input text
    return view.to_json(orient="records", lines=True, double_precision=15).splitlines()


def _shares(good: pd.Series, quarantine: pd.DataFrame) -> pd.Series:
    """The share of quarantined rows among all rows of each partition day (in date order), from the clean
    rows per UTC day (``_utc_date_counts``) and the quarantine rows (their ``partition_date``)."""
    bad = quarantine["partition_date"].value_counts()
    total = good.add(bad, fill_value=0)
    return bad.reindex(total.index, fill_value=0).div(total).sort_index()


def _utc_date_counts(timestamps: pd.Series) -> pd.Series:
    """``timestamps.dt.date.value_counts()`` in UTC (in date order), counted on day numbers so that only the
    few distinct days become Python objects."""
    if isinstance(
        timestamps.dtype, pd.DatetimeTZDtype
    ):  # asi8 counts from the epoch in UTC, whatever the zone
        days = timestamps.array.asi8.view(f"datetime64[{timestamps.dtype.unit}]").astype("datetime64[D]")
    else:
        days = timestamps.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    days = days[~np.isnat(days)]
    day_numbers = days.view("int64")
    if len(days) and day_numbers.max() - day_numbers.min() < 4 * len(days):
        # a few days in a row (a piece has one): counted by offset, without np.unique's sort
        first = day_numbers.min()
        per_day = np.bincount(day_numbers - first)
        present = np.flatnonzero(per_day)
        days, counts = (present + first).astype("datetime64[D]"), per_day[present]
    else:
        days, counts = np.unique(days, return_counts=True)
    index = pd.Index(days.astype(object), dtype=object, name=timestamps.name)
    return pd.Series(counts.astype("int64"), index=index, name="count")


class QuarantineShareExceeded(ValueError):
    """Some partition day has more than the limit of bad rows: nothing of the window may be written."""

    def __init__(self, description: str, counts: dict[str, int]):
        super().__init__(description)
        self.description, self.counts = description, counts
