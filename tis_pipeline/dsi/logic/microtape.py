"""MicroTape hashes: the last W tokens of a symbol up to bar t, canonically encoded and hashed.

MicroTape token (1 byte per bar) ``tok = ret + 5 range + 15 volume + 45 gap`` in 0..89 (``features``).
MicroTape hash of bar t: SHA-256 hex of
``b"TIS-DSI-MICROTAPE" | u16 ENCODING_VERSION | u16 W | u32 n | u16 len(sym) | sym utf-8 | n x int64 epoch-ns
big-endian | n token bytes`` over the last n = min(W, bars so far) bars up to t.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from tis_pipeline.dsi.logic.config import ENCODING_VERSION
from tis_pipeline.dsi.logic.features import BarFeatures


def microtape_hash(symbol: str, ts_ns: np.ndarray, tokens: np.ndarray, window: int) -> str:
    """SHA-256 hex of the canonical encoding of one MicroTape window (tokens: n token ids 0..89)."""
    ts = np.asarray(ts_ns, dtype=np.int64).astype(">i8")
    return _tape_digest(symbol, ts, np.asarray(tokens, dtype=np.uint8), window)


def _tape_head(sym: bytes, window: int, n: int) -> bytes:
    return b"TIS-DSI-MICROTAPE" + struct.pack(">HHIH", ENCODING_VERSION, window, n, len(sym)) + sym


def _tape_digest(symbol: str, ts_be: np.ndarray, tok: np.ndarray, window: int) -> str:
    head = _tape_head(symbol.encode(), window, len(ts_be))
    return hashlib.sha256(head + ts_be.tobytes() + np.ascontiguousarray(tok).tobytes()).hexdigest()


def tape_hash(bars: BarFeatures, name: str, t: int, window: int) -> str:
    """The MicroTape hash of row t of ``bars`` (symbol ``name``)."""
    a = max(t - window + 1, int(bars.seg_start[t]))
    return _tape_digest(name, bars.cols[0][a : t + 1].astype(">i8"), bars.tokens(slice(a, t + 1)), window)


def tape_hashes(bars: BarFeatures, names: list[str], rows: np.ndarray, window: int) -> list[str]:
    """tape_hash of many rows (names per segment): full windows gathered at once, one sha256 each."""
    out: list[str] = [""] * len(rows)
    full = rows - bars.seg_start[rows] >= window - 1
    fi = np.flatnonzero(full)
    if len(fi):
        win = rows[fi, None] + np.arange(1 - window, 1)
        blob = np.concatenate([bars.cols[0][win].astype(">i8").view(np.uint8), bars.tokens(win)], axis=1)
        heads = {}
        for q, t, b in zip(fi.tolist(), bars.seg[rows[fi]].tolist(), blob, strict=True):
            if t not in heads:
                heads[t] = _tape_head(names[t].encode(), window, window)
            out[q] = hashlib.sha256(heads[t] + b.tobytes()).hexdigest()
    for q in np.flatnonzero(~full).tolist():
        t = int(rows[q])
        out[q] = tape_hash(bars, names[bars.seg[t]], t, window)
    return out
