"""``tis dev`` (the Dagster UI and daemon, stopped whole on a signal) and ``tis docs`` (the Data Docs
site)."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import re
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import typer

from tis_pipeline.cli.app import app, console, err, fail, migrate_schema, prepared
from tis_pipeline.settings import PROJECT_ROOT

if TYPE_CHECKING:
    pass


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# a host name's labels (RFC 1123); a name whose last label is all digits is a mistyped address
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _listen_problem(host: str, port: int) -> str | None:
    """Why the UI could not listen on host:port (a wrong address, one of another machine, a port in use), or
    None when it can."""
    if not 1 <= port <= 65535:
        return f"--port must be between 1 and 65535, not {port}"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        labels = host.removesuffix(".").split(".")
        if len(host) > 253 or not all(_HOST_LABEL.match(x) for x in labels) or labels[-1].isdigit():
            return f"--host {host} is not an IP address or a host name (e.g. 127.0.0.1, 0.0.0.0 or localhost)"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        return f"--host {host} does not resolve to an address ({exc.strerror})"
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use: stop what uses it or pass --port"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"--host {host} is not an address of this machine (e.g. 127.0.0.1 or 0.0.0.0)"
            if exc.errno == errno.EACCES:
                return f"port {port} on {host} needs privileges: pass --port above 1023"
            return f"cannot listen on {host} port {port}: {exc.strerror}"
    return None


@app.command("dev")
def dev(
    host: str = typer.Option(
        "127.0.0.1", help="Interface to bind; keep 127.0.0.1 unless a proxy authenticates."
    ),
    port: int = typer.Option(3000, help="Port of the UI."),
) -> None:
    """Start the Dagster UI and daemon (`dagster dev`) against the project's database and instance."""
    problem = _listen_problem(host, port)
    if problem is not None:
        fail(problem)
    env = prepared()
    migrate_schema(env["TIS_DATABASE_URL"])
    console.print(f"Dagster UI on http://{host}:{port} (instance {env['DAGSTER_HOME']})")
    cmd = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(PROJECT_ROOT / "workspace.yaml"),
        "-h",
        host,
        "-p",
        str(port),
    ]
    raise typer.Exit(run_process_group(cmd, **_dev_child(env)))


# after SIGTERM or Ctrl-C, how long `dagster dev` has to stop before its process group is killed
DEV_STOP_SECONDS = 20


def _dev_child(env: dict[str, str]) -> dict:
    """The working directory and environment of `dagster dev`, without its false warnings.

    `dagster dev` warns that ./dagster.yaml "will not be used" whenever it runs elsewhere than DAGSTER_HOME;
    when DAGSTER_HOME's dagster.yaml is the project's (the link `tis` makes), the warning is false, so the
    child runs in DAGSTER_HOME itself (paths in the environment made absolute first). The beta and preview
    warnings of `backfill_policy` are silenced in the child, as in this process."""
    home = os.path.realpath(env["DAGSTER_HOME"])
    child = dict(os.environ)
    for name in ("TIS_HOME", "TIS_MARKET_DATA_DIR", "TIS_ARCHIVE_DIR"):
        if child.get(name):
            child[name] = os.path.abspath(child[name])
    # Dagster's beta and preview warnings on decorator parameters (`backfill_policy` of `@asset`) are issued
    # from this module; PYTHONWARNINGS cannot name Dagster's warning classes (not importable at start-up)
    quiet = "ignore:::dagster._core.decorator_utils"
    child["PYTHONWARNINGS"] = ",".join(w for w in (child.get("PYTHONWARNINGS"), quiet) if w)
    project_yaml = str((PROJECT_ROOT / "dagster.yaml").resolve())
    if os.path.realpath(os.path.join(home, "dagster.yaml")) == project_yaml:
        child["DAGSTER_HOME"] = home
        return {"cwd": home, "env": child}
    return {"cwd": str(PROJECT_ROOT), "env": child}


def run_process_group(cmd: list[str], cwd: str, env: dict[str, str]) -> int:
    """Run ``cmd`` in a process group of its own and wait; SIGTERM, SIGINT (Ctrl-C) and SIGHUP to this process
    go to the whole group (the webserver, the daemon, the code servers), which is killed if it has not stopped
    after DEV_STOP_SECONDS. Returns the exit code (128 + the signal when stopped by one)."""
    import signal

    proc = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True)
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        _kill_group(proc.pid, signum)

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {s: signal.signal(s, forward) for s in handled}
    try:
        # polled, not one wait(): a wait without timeout resumes after the handler and never times out
        deadline = None
        while proc.poll() is None:
            if received and deadline is None:
                deadline = time.monotonic() + DEV_STOP_SECONDS
            if deadline is not None and time.monotonic() > deadline:
                err.print(f"dagster dev did not stop within {DEV_STOP_SECONDS} s: killing its processes")
                _kill_group(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.2)
        # the webserver or daemon may outlive `dagster dev` itself: nothing of the group stays behind
        _stop_group(proc.pid)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 + received[0] if received else proc.returncode


def _kill_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(pgid: int) -> None:
    """SIGTERM what is left of the group, SIGKILL it if still there after DEV_STOP_SECONDS."""
    import signal

    if not _group_alive(pgid):
        return
    _kill_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + DEV_STOP_SECONDS
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(pgid):
        _kill_group(pgid, signal.SIGKILL)


@app.command("docs")
def docs(
    port: int = typer.Option(
        0, help="Port on 127.0.0.1 (0: TIS_GX_DOCS_PORT, default 8765; the checks link there)."
    ),
    open_browser: bool = typer.Option(True, "--open/--no-open", help="Open the index in a browser."),
    build: bool = typer.Option(
        True, "--build/--no-build", help="Rebuild the index from the stored results first."
    ),
) -> None:
    """Serve Great Expectations' Data Docs (suites and every check's validation result) on 127.0.0.1."""
    import webbrowser

    from tis_pipeline.quality import docs as gx_docs

    if build:
        console.print(f"building the Data Docs index of {gx_docs.gx_dir()} …")
        gx_docs.build_index()
    if not (gx_docs.site_dir() / "index.html").exists():
        fail(f"no Data Docs under {gx_docs.site_dir()}: materialize an asset (or run without --no-build)")
    chosen = port or gx_docs.docs_port()
    if not _port_free("127.0.0.1", chosen):
        fail(f"port {chosen} on 127.0.0.1 is in use: stop what uses it or pass --port")
    server = gx_docs.make_server(chosen)
    url = f"http://127.0.0.1:{chosen}/index.html"
    console.print(f"Data Docs on {url} (Ctrl-C to stop)")
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
