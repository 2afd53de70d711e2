"""The real Dagster UI in a headless Chromium: the project's assets and a materialization are visible.

Starts ``dagster-webserver`` on the repository's ``workspace.yaml`` against an instance configured by the
repository's ``dagster.yaml`` (PostgreSQL storage in a fresh database), records one real partitioned run of
every daily-partitioned asset and its checks (five synthetic symbols, one day) in that instance, and checks in
Debian's Chromium (driven by Playwright's Python API; no browser is downloaded): the asset catalog, the asset
page of ``market_data_1m``, the page of its failing WARN check ``market_data_1m_no_gaps``, the column schema
of ``trading_plans`` with the seed's comments, the five symbols of the 15-minute plot, the module names of
``pnl_by_module``, and the click from a Great Expectations check's link to its Data Docs page (served here on
127.0.0.1 as ``tis docs`` serves it). The webserver, its database, the Data Docs server and the run are shared
by the module's tests (started once).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from tis_pipeline.definitions import defs
from tis_pipeline.market_data.sources import BarSource
from tis_pipeline.market_data.synthetic import day_bars
from tis_pipeline.pg import migrate
from tis_pipeline.pg.engine import engine, with_driver
from tis_pipeline.quality import docs
from tis_pipeline.resources import PostgresResource
from tis_pipeline.settings import PROJECT_ROOT
from tis_pipeline_tests.conftest import _create_database, _drop_database

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
SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE"]
SEED = 1
PARTITION = "2024-01-02"
GX_GAPS_CHECK = "gx_market_data_1m_no_gaps"  # the same rule judged by Great Expectations' step
GAPS_CHECK = "market_data_1m_no_gaps"  # WARN: fails on the synthetic bars, which leave a few minutes out
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


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = _chromium()
    if path is None:
        pytest.skip("Chromium not installed: apt-get install chromium (Debian) to run the browser test")
    return path


@pytest.fixture(scope="module")
def storage_url(server_url: str) -> Iterator[str]:
    """A fresh empty database for the webserver's instance, shared by this module's tests, dropped after."""
    url = _create_database(server_url, "tis_empty")
    try:
        yield url
    finally:
        _drop_database(server_url, url)


@pytest.fixture(scope="module")
def project_url(server_url: str) -> Iterator[str]:
    """A fresh migrated project database of the module's own: the run writes every table of the day."""
    url = _create_database(server_url, "tis_browser")
    try:
        migrate.upgrade(url)
        yield url
    finally:
        _drop_database(server_url, url)


@pytest.fixture(scope="module")
def dagster_home(
    tmp_path_factory: pytest.TempPathFactory, storage_url: str, project_url: str
) -> Iterator[Path]:
    """DAGSTER_HOME with the repository's dagster.yaml, storage in a fresh empty database; the GX project in
    a temporary folder, its Data Docs linked on a free port."""
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").symlink_to(PROJECT_ROOT / "dagster.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        mp.setenv("TIS_DAGSTER_PG_URL", with_driver(storage_url, "psycopg2"))
        mp.setenv("TIS_DATABASE_URL", project_url)
        mp.setenv("DAGSTER_DISABLE_TELEMETRY", "1")
        mp.setenv("TIS_GX_DIR", str(tmp_path_factory.mktemp("gx")))
        mp.setenv("TIS_GX_DOCS_PORT", str(_free_port()))
        mp.setenv("GX_ANALYTICS_ENABLED", "false")
        yield home


@pytest.fixture(scope="module")
def data_docs(dagster_home: Path) -> Iterator[str]:
    """The Data Docs site served on 127.0.0.1 at the port the checks' links name, as `tis docs` serves it."""
    server = docs.make_server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{docs.docs_port()}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def materialized(dagster_home: Path, project_url: str) -> str:
    """One real run of every daily-partitioned asset and its checks for PARTITION (the daily job's
    selection), recorded in the webserver's instance; the module's own database is dropped afterwards."""
    selection = defs.resolve_job_def("daily_partitioned_job").asset_layer.executable_asset_keys
    graph = defs.resolve_asset_graph()
    checks = [c for c in defs.asset_checks or [] if all(k.asset_key in selection for k in c.check_keys)]
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) and a.keys <= selection]
    assert {k for a in assets for k in a.keys} == set(selection) and set(selection) <= set(
        graph.get_all_asset_keys()
    )
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            [*assets, *checks],
            instance=instance,
            partition_key=PARTITION,
            resources={
                "db": PostgresResource(url=project_url),
                "bars": BarSource(source="synthetic", symbols=SYMBOLS, seed=SEED),
            },
            raise_on_error=False,
        )
        assert result.success
    return result.run_id


@pytest.fixture(scope="module")
def webserver(dagster_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real dagster-webserver as a subprocess in its own process group; yields its base URL.

    Started once for the module's tests.
    """
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}  # the monkeypatched TIS_* / DAGSTER_* variables
    logs = tmp_path_factory.mktemp("webserver")
    stdout_path, stderr_path = logs / "webserver.out", logs / "webserver.err"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            _webserver_command(port),
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"dagster-webserver exited with code {proc.returncode} before answering "
                    f"/server_info; stderr tail:\n{_tail(stderr_path)}"
                )
            try:
                with urllib.request.urlopen(f"{base}/server_info", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"dagster-webserver did not answer {base}/server_info within {STARTUP_TIMEOUT_S:.0f} s; "
                    f"stderr tail:\n{_tail(stderr_path)}"
                )
            time.sleep(0.5)
        yield base
    finally:
        _stop(proc)


def _expected_gaps() -> tuple[int, int, int, set[str]]:
    """The synthetic day's bars, missing minutes, bars after a gap and those bars' ISO timestamps (over the
    symbols, each symbol's gaps on its own).

    Computed from the source itself, independently of the quality rules.
    """
    bars = day_bars(pd.Timestamp(PARTITION, tz="UTC"), SYMBOLS, seed=SEED)
    rows = missing = gaps = 0
    after: set[str] = set()
    for _, one in bars.groupby("symbol"):
        ts = one["timestamp"].sort_values()
        rows += len(ts)
        missing += int((ts.iloc[-1] - ts.iloc[0]) / pd.Timedelta(minutes=1)) + 1 - len(ts)
        following = ts[ts.diff() > pd.Timedelta(minutes=1)]
        gaps += len(following)
        after |= {t.isoformat() for t in following}
    return rows, missing, gaps, after


def _metadata_value(page, label: str):
    """The value cell of one metadata entry in the UI's metadata table (label in the row's first cell)."""
    return page.locator(f"xpath=//tr[td[1][normalize-space()='{label}']]/td[2]")


@contextlib.contextmanager
def _browser_page(chromium_path: str, tmp_path: Path):
    """A Playwright page in Debian's Chromium; a screenshot of the page is saved as failure.png on error."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        # the "Join the Dagster community" dialog would cover the screenshots: mark it dismissed beforehand
        page.add_init_script("window.localStorage.setItem('communityNux', 'true')")
        try:
            yield page
        except Exception:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()


def test_ui_shows_assets_and_materialization(chromium_path, materialized, webserver, tmp_path):
    from playwright.sync_api import expect

    with _browser_page(chromium_path, tmp_path) as page:
        # the asset catalog lists every market data asset (the code location loads in the background)
        page.goto(f"{webserver}/assets", wait_until="domcontentloaded")
        for name in ASSETS:
            expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
        page.screenshot(path=str(tmp_path / "assets.png"), full_page=True)

        # the asset page of market_data_1m shows the run's materialization: its partition and metadata
        page.goto(f"{webserver}/assets/market_data_1m", wait_until="domcontentloaded")
        expect(page.get_by_text(PARTITION).first).to_be_visible(timeout=UI_TIMEOUT_MS)
        page.goto(
            f"{webserver}/assets/market_data_1m?view=events&partition={PARTITION}",
            wait_until="domcontentloaded",
        )
        expect(page.get_by_text("quarantined_rows").first).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(page.get_by_text(materialized[:8]).first).to_be_visible(timeout=UI_TIMEOUT_MS)  # the run id
        page.screenshot(path=str(tmp_path / "market_data_1m.png"), full_page=True)


def test_ui_shows_failed_gaps_check_with_its_metadata(chromium_path, materialized, webserver, tmp_path):
    """The check page of market_data_1m_no_gaps: its name, its failed WARN status and its failing rows."""
    from playwright.sync_api import expect

    rows, missing, after_gap, after_gap_times = _expected_gaps()
    assert missing > 0 and after_gap > 0  # the synthetic day leaves minutes out, so the WARN check fails

    with _browser_page(chromium_path, tmp_path) as page:
        page.goto(
            f"{webserver}/assets/market_data_1m?view=checks&checkDetail={GAPS_CHECK}",
            wait_until="domcontentloaded",
        )
        # the check's name (the list entry and the detail header) and its latest evaluation's description
        name = page.get_by_text(GAPS_CHECK, exact=True).filter(visible=True)
        expect(name).to_have_count(
            2, timeout=UI_TIMEOUT_MS
        )  # the entry in the checks list and the detail header
        expect(page.get_by_text(f"{after_gap} of {rows} rows fail:")).to_be_visible(timeout=UI_TIMEOUT_MS)

        # the evaluation result: failed, with the warning (not the error) icon of a WARN check
        heading = page.get_by_text("Evaluation result", exact=True)
        result = page.locator("div", has=heading).last  # the innermost box holding the heading and the tag
        expect(result).to_contain_text("Failed")
        expect(result.get_by_role("img", name="warning_outline")).to_be_visible()
        expect(result.get_by_role("img", name="cancel")).to_have_count(0)

        # the metadata: counts computed from the source, and the sample of the bars that follow a gap
        expect(_metadata_value(page, "missing_minutes")).to_have_text(str(missing))
        expect(_metadata_value(page, "failing_rows")).to_have_text(str(after_gap))
        expect(_metadata_value(page, "rows_checked")).to_have_text(str(rows))
        expect(_metadata_value(page, "partition_start")).to_have_text(f"{PARTITION}T00:00:00+00:00")
        sample = _metadata_value(page, "failing_rows_sample")
        expect(sample.locator("thead th")).to_have_text(["symbol", "timestamp", "missing_minutes"])
        shown = sample.locator("tbody tr td:nth-child(2)")
        expect(shown).to_have_count(min(20, after_gap))
        assert set(shown.all_inner_texts()) <= after_gap_times  # every sampled bar follows a gap
        page.screenshot(path=str(tmp_path / "market_data_1m_no_gaps.png"), full_page=True)


def _markdown(page, label: str):
    """A markdown metadata entry as rendered: in the dialog the UI opens for a long one ("[Show Markdown]" in
    its cell), or in the cell itself."""
    from playwright.sync_api import expect

    cell = _metadata_value(page, label).first
    expect(cell).to_be_visible(timeout=UI_TIMEOUT_MS)
    button = cell.get_by_text("[Show Markdown]")
    if button.count():
        button.click()
        return page.get_by_role("dialog").last
    return cell


def _executed_module_names(project_url: str) -> set[str]:
    """The names of the modules with an executed plan (P&L) on PARTITION, read from the tables."""
    with engine(project_url).connect() as conn:
        return set(
            conn.execute(
                sa.text(
                    "SELECT DISTINCT m.learning_patterns->>'name' FROM trading_plans p "
                    "JOIN modules m USING (module_id) WHERE p.pnl IS NOT NULL"
                )
            ).scalars()
        )


def test_ui_shows_the_catalog_plots_module_names_and_gx_data_docs(
    chromium_path, materialized, webserver, data_docs, project_url, tmp_path
):
    """What a new user looks for: the column schema with the seed's comments on trading_plans, the five
    symbols of the 15-minute plot, module names in pnl_by_module, and the Data Docs page behind a GE check."""
    from playwright.sync_api import expect

    names = _executed_module_names(project_url)
    assert names and None not in names
    with _browser_page(chromium_path, tmp_path) as page:
        # (a) the column schema of trading_plans: seed columns, types and the seed's own comments
        page.goto(f"{webserver}/assets/trading_plans", wait_until="domcontentloaded")
        expect(page.get_by_text("entry_conditions", exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(page.get_by_text("Trigger conditions", exact=True).first).to_be_visible()
        expect(page.get_by_text("% of portfolio", exact=True).first).to_be_visible()
        expect(page.get_by_text("trading-day", exact=True).first).to_be_visible()  # the owner team
        expect(page.get_by_text("domain: trading_day").first).to_be_visible()
        page.screenshot(path=str(tmp_path / "trading_plans_columns.png"), full_page=True)

        # (b) the 15-minute plot of the run: five of five symbols drawn, named in the metadata beside it
        page.goto(
            f"{webserver}/assets/market_data_15m?view=events&partition={PARTITION}",
            wait_until="domcontentloaded",
        )
        expect(_metadata_value(page, "symbols").first).to_have_text(", ".join(SYMBOLS), timeout=UI_TIMEOUT_MS)
        plot = _markdown(page, "plot")
        expect(plot).to_contain_text("5 of 5 symbols shown")
        expect(plot).to_contain_text(f"of the run's {PARTITION}")
        expect(plot.locator("img")).to_have_count(1)
        page.screenshot(path=str(tmp_path / "market_data_15m_plot.png"), full_page=True)
        page.keyboard.press("Escape")

        # (c) pnl_by_module names the modules (their names from the modules table), not only their ids
        page.goto(
            f"{webserver}/assets/trading_plans?view=events&partition={PARTITION}",
            wait_until="domcontentloaded",
        )
        expect(_metadata_value(page, "pnl_by_module").first).to_be_visible(timeout=UI_TIMEOUT_MS)
        pnl = _markdown(page, "pnl_by_module")
        expect(pnl.locator("th")).to_contain_text(["module_id", "name", "generation"])
        shown = set(pnl.locator("tbody tr td:nth-child(2)").all_inner_texts())
        assert shown == names if len(names) <= 50 else shown < names
        page.screenshot(path=str(tmp_path / "pnl_by_module.png"), full_page=True)
        page.keyboard.press("Escape")

        # (d) a GE check's link opens its Data Docs page, which names the expectations it ran
        page.goto(
            f"{webserver}/assets/market_data_1m?view=checks&checkDetail={GX_GAPS_CHECK}",
            wait_until="domcontentloaded",
        )
        link = _metadata_value(page, "gx_data_docs").first.locator("a").first  # the URL as its text
        pattern = re.compile(rf"^{re.escape(data_docs)}/validations/.+\.html$")
        expect(link).to_have_attribute("href", pattern)
        with page.context.expect_page() as opened:
            link.click()
        docs_page = opened.value
        docs_page.wait_for_load_state("domcontentloaded")
        assert docs_page.url.startswith(f"{data_docs}/validations/")
        for expectation in (
            "market_data_1m_no_gaps (expect_column_values_to_be_between)",
            "market_data_1m_key_unique (expect_compound_columns_to_be_unique)",
            "market_data_1m_close_not_null (expect_column_values_to_not_be_null)",
        ):
            expect(docs_page.get_by_text(expectation).first).to_be_visible(timeout=UI_TIMEOUT_MS)
        docs_page.screenshot(path=str(tmp_path / "gx_data_docs.png"), full_page=True)
