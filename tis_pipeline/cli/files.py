"""``tis files [DIR]``: a dry run of the bar files a directory holds, before loading them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tis_pipeline.cli.app import app, console, fail


@app.command("files")
def files(
    data_dir: Annotated[
        Path | None,
        typer.Argument(
            help="The directory (or one file) to look at; default TIS_MARKET_DATA_DIR.", show_default=False
        ),
    ] = None,
) -> None:
    """List every bar file with its source profile, symbol, interval, time zone, bar label, first/last day
    and rows (counted, or estimated from the file's head), and flag what looks wrong: symbols that differ
    only by a date or interval token, files of one symbol with overlapping days, names no profile knows.
    Reads only the ends of each file; loads nothing, needs no database."""
    from tis_pipeline.market_data.readers.overrides import RULES_FILE, SourceRulesError
    from tis_pipeline.market_data.readers.survey import probe_dir, survey
    from tis_pipeline.settings import settings

    s = settings()
    root = data_dir if data_dir is not None else (Path(s.market_data_dir) if s.market_data_dir else None)
    if root is None:
        fail("no directory given and TIS_MARKET_DATA_DIR is not set: `tis files DIR`")
    if not root.exists():
        fail(f"{root} does not exist")
    try:
        infos = probe_dir(root, tz=s.market_tz, bar_label=s.bar_label)
    except SourceRulesError as exc:
        fail(f"cannot use the override file: {exc}")
    result = survey(infos, root if root.is_dir() else None)
    table = Table(title=f"bar files under {escape(str(root))}", show_lines=False)
    for column in result.table.columns:
        table.add_column(
            column,
            overflow="fold",
            no_wrap=column not in ("file", "flags", "symbols"),
            justify="right" if column == "rows" else "left",
        )
    for row in result.table.itertuples(index=False):
        table.add_row(*(escape(str(v)) for v in row))
    Console(width=max(console.width, 220)).print(table)  # piped output keeps whole rows
    minute = result.table[result.table["interval"] == "1m"]
    console.print(
        f"{len(result.table)} file(s), {len(minute)} of 1-minute bars, "
        f"{minute['rows'].sum():,} row(s) (counted or estimated); defaults: tz {s.market_tz}, "
        f"bar label {s.bar_label}; overrides: "
        + (str(root / RULES_FILE) if root.is_dir() and (root / RULES_FILE).is_file() else "none")
    )
    if result.findings:
        console.print(f"\n[bold yellow]{len(result.findings)} finding(s):[/]")
        for line in result.findings:
            console.print(f"- {escape(line)}")
    else:
        console.print("no findings")
