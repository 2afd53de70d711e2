"""The explicit override file: ``tis-sources.toml`` at the top of the market data directory, for what no
source profile knows. It wins over every inference (profiles, TIS_MARKET_TZ, TIS_MARKET_BAR_LABEL, the
generic symbol rule)::

    # symbols as inferred (from a profile, a symbol column or a file name) -> the symbol to store
    [symbols]
    XBTUSD = "BTCUSD"

    # settings for a file or a folder, by path relative to the data directory ("." = every file); the most
    # specific path wins, key by key
    [paths."mt5"]
    tz = "Europe/Athens"          # naive timestamps are local time there
    [paths."ninja/ES 06-24.Last.txt"]
    tz = "America/Chicago"
    bar_label = "close"           # "open" or "close": what the timestamp stamps
    symbol = "ES"                 # the file's symbol (files without a symbol column)

A malformed file raises :class:`SourceRulesError` naming the file and the key.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tis_pipeline.market_data.readers.contract import BarFileError

RULES_FILE = "tis-sources.toml"
_PATH_KEYS = ("tz", "bar_label", "symbol")
_SYMBOL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/:-"


class SourceRulesError(BarFileError):
    """``tis-sources.toml`` cannot be used: the message names the file and the key."""

    def __reduce__(self) -> tuple:
        return (SourceRulesError, (self.path, self.reason, self.line))


@dataclass(frozen=True)
class PathSetting:
    tz: str | None = None
    bar_label: str | None = None
    symbol: str | None = None


@dataclass(frozen=True)
class SourceRules:
    """The parsed override file (empty when there is none)."""

    symbols: dict[str, str] = field(default_factory=dict)
    paths: dict[str, PathSetting] = field(default_factory=dict)
    digest: str = ""  # of the file's bytes: a changed file re-learns every file of the manifest

    def for_path(self, rel: str) -> PathSetting:
        """The settings for a file at ``rel`` (relative, '/'-separated): each key from the most specific
        path (the file itself, then its folders, then ".") that sets it."""
        parts = PurePosixPath(rel).parts
        chain = [".", *("/".join(parts[:i]) for i in range(1, len(parts) + 1))]
        out: dict[str, str | None] = dict.fromkeys(_PATH_KEYS)
        for key in chain:
            setting = self.paths.get(key)
            if setting is None:
                continue
            for k in _PATH_KEYS:
                value = getattr(setting, k)
                if value is not None:
                    out[k] = value
        return PathSetting(**out)


def _fail(path: Path, key: str, why: str) -> SourceRulesError:
    return SourceRulesError(str(path), f"key {key}: {why}")


def _symbol(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, key, f"a symbol must be a non-empty string, not {value!r}")
    sym = value.strip().upper()
    if len(sym) > 20 or any(c not in _SYMBOL_CHARS for c in sym):
        raise _fail(path, key, f"{value!r} is not a symbol (1-20 of A-Z 0-9 . _ / : -)")
    return sym


def _normal_rel(text: str) -> str:
    rel = PurePosixPath(text.replace(os.sep, "/").strip())
    parts = [p for p in rel.parts if p not in ("", ".")]
    return "/".join(parts) if parts else "."


def parse_rules(path: Path, data: bytes) -> SourceRules:
    """Parse the bytes of an override file; raises SourceRulesError naming ``path`` and the key."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SourceRulesError(str(path), f"not UTF-8 text: {exc.reason}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SourceRulesError(str(path), f"not valid TOML: {exc}") from exc
    unknown = sorted(set(doc) - {"symbols", "paths"})
    if unknown:
        raise _fail(path, unknown[0], 'unknown table (use [symbols] and [paths."<file or folder>"])')
    raw_symbols = doc.get("symbols", {})
    if not isinstance(raw_symbols, dict):
        raise _fail(path, "symbols", "must be a table of inferred symbol = symbol")
    symbols = {
        _symbol(path, f"symbols.{k}", k): _symbol(path, f"symbols.{k}", v) for k, v in raw_symbols.items()
    }
    raw_paths = doc.get("paths", {})
    if not isinstance(raw_paths, dict):
        raise _fail(path, "paths", 'must hold tables: [paths."<file or folder>"]')
    paths: dict[str, PathSetting] = {}
    for rel, table in raw_paths.items():
        where = f'paths."{rel}"'
        if not isinstance(table, dict):
            raise _fail(path, where, "must be a table with tz, bar_label or symbol")
        bad = sorted(set(table) - set(_PATH_KEYS))
        if bad:
            raise _fail(path, f"{where}.{bad[0]}", f"unknown key (allowed: {', '.join(_PATH_KEYS)})")
        tz = table.get("tz")
        if tz is not None:
            if not isinstance(tz, str):
                raise _fail(path, f"{where}.tz", f"must be a time zone name, not {tz!r}")
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                raise _fail(path, f"{where}.tz", f"unknown time zone {tz!r}") from None
        label = table.get("bar_label")
        if label is not None and label not in ("open", "close"):
            raise _fail(path, f"{where}.bar_label", f"must be 'open' or 'close', not {label!r}")
        symbol = table.get("symbol")
        paths[_normal_rel(rel)] = PathSetting(
            tz=tz,
            bar_label=label,
            symbol=None if symbol is None else _symbol(path, f"{where}.symbol", symbol),
        )
    return SourceRules(symbols=symbols, paths=paths, digest=hashlib.sha256(data).hexdigest()[:16])


def load_rules(root: str | os.PathLike[str]) -> SourceRules:
    """The override file of the data directory ``root`` (``root/tis-sources.toml``), or empty rules."""
    root_p = Path(root)
    path = root_p / RULES_FILE
    if not root_p.is_dir() or not path.is_file():
        return SourceRules()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceRulesError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    return parse_rules(path, data)


def relative(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> str | None:
    """``path`` relative to ``root`` with '/' separators, or None when it is not under it."""
    try:
        return Path(path).absolute().relative_to(Path(root).absolute()).as_posix()
    except ValueError:
        return None
