"""The real Dagster UI in a headless Chromium: the project's assets and a materialization are visible.

Starts ``dagster-webserver`` on the repository's ``workspace.yaml`` against an instance configured by the
repository's ``dagster.yaml`` (PostgreSQL storage in a fresh database), records one real partitioned run in that
instance, and checks the asset catalog and the asset page of ``market_data_1m`` in Debian's Chromium (driven by
Playwright's Python API; no browser is downloaded).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from tis_pipeline.db import engine, with_driver
from tis_pipeline.market_data.assets import market_data_1h, market_data_1m, market_data_15m
from tis_pipeline.market_data.resources import BarSource
from tis_pipeline.resources import PostgresResource
from tis_pipeline.settings import PROJECT_ROOT

pytestmark = [pytest.mark.pg, pytest.mark.browser]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ASSETS = ("market_data_1m", "market_data_15m", "market_data_1h")
BAR_TABLES = ASSETS  # the assets are named after their tables
SYMBOL = "AAA"
PARTITION = "2024-01-02"
STARTUP_TIMEOUT_S = 90.0
UI_TIMEOUT_MS = 60_000


def _chromium() -> str | None:
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no output>"


def _webserver_command(port: int) -> list[str]:
    exe = Path(sys.executable).with_name("dagster-webserver")
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "dagster_webserver"]
    return [*head, "-h", "127.0.0.1", "-p", str(port), "-w", str(PROJECT_ROOT / "workspace.yaml")]


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the webserver's whole process group (it spawns a code-server subprocess)."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def chromium_path() -> str:
    path = _chromium()
    if path is None:
        pytest.skip("Chromium not installed: apt-get install chromium (Debian) to run the browser test")
    return path


@pytest.fixture
def dagster_home(tmp_path: Path, empty_database_url: str, database_url: str, monkeypatch) -> Path:
    """DAGSTER_HOME with the repository's dagster.yaml, storage in a fresh empty database."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(PROJECT_ROOT / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("TIS_DAGSTER_PG_URL", with_driver(empty_database_url, "psycopg2"))
    monkeypatch.setenv("TIS_DATABASE_URL", database_url)
    monkeypatch.setenv("DAGSTER_DISABLE_TELEMETRY", "1")
    return home


@pytest.fixture
def materialized(dagster_home: Path, database_url: str) -> Iterator[str]:
    """One real run of the market data assets for PARTITION, recorded in the webserver's instance.

    The bars go to the session's shared project database; they are deleted again afterwards.
    """
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            [market_data_1m, market_data_15m, market_data_1h],
            instance=instance,
            partition_key=PARTITION,
            resources={
                "db": PostgresResource(url=database_url),
                "bars": BarSource(source="synthetic", symbols=[SYMBOL], seed=1),
            },
        )
        assert result.success
    try:
        yield result.run_id
    finally:
        day = dt.datetime.fromisoformat(PARTITION).replace(tzinfo=dt.UTC)
        with engine(database_url).begin() as conn:
            for table in BAR_TABLES:  # fixed names, not input
                conn.execute(sa.text(f'DELETE FROM {table} WHERE symbol = :s AND "timestamp" >= :a AND "timestamp" < :b'),
                             {"s": SYMBOL, "a": day, "b": day + dt.timedelta(days=1)})


@pytest.fixture
def webserver(dagster_home: Path, tmp_path: Path) -> Iterator[str]:
    """The real dagster-webserver as a subprocess in its own process group; yields its base URL."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}  # the monkeypatched TIS_* / DAGSTER_* variables
    stdout_path, stderr_path = tmp_path / "webserver.out", tmp_path / "webserver.err"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            _webserver_command(port), cwd=PROJECT_ROOT, env=env, stdout=out, stderr=err,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dagster-webserver exited with code {proc.returncode} before answering "
                            f"/server_info; stderr tail:\n{_tail(stderr_path)}")
            try:
                with urllib.request.urlopen(f"{base}/server_info", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dagster-webserver did not answer {base}/server_info within {STARTUP_TIMEOUT_S:.0f} s; "
                            f"stderr tail:\n{_tail(stderr_path)}")
            time.sleep(0.5)
        yield base
    finally:
        _stop(proc)


def test_ui_shows_assets_and_materialization(chromium_path, materialized, webserver, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        try:
            # the asset catalog lists every market data asset (the code location loads in the background)
            page.goto(f"{webserver}/assets", wait_until="domcontentloaded")
            for name in ASSETS:
                expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
            page.screenshot(path=str(tmp_path / "assets.png"), full_page=True)

            # the asset page of market_data_1m shows the run's materialization: its partition and metadata
            page.goto(f"{webserver}/assets/market_data_1m", wait_until="domcontentloaded")
            expect(page.get_by_text(PARTITION).first).to_be_visible(timeout=UI_TIMEOUT_MS)
            page.goto(f"{webserver}/assets/market_data_1m?view=events&partition={PARTITION}",
                      wait_until="domcontentloaded")
            expect(page.get_by_text("quarantined_rows").first).to_be_visible(timeout=UI_TIMEOUT_MS)
            expect(page.get_by_text(materialized[:8]).first).to_be_visible(timeout=UI_TIMEOUT_MS)  # the run id
            page.screenshot(path=str(tmp_path / "market_data_1m.png"), full_page=True)
        except Exception:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
