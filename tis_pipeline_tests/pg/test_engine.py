"""The project's engine: what every session it opens is set to, on the real server."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tis_pipeline.pg.engine import (
    LARGE_WORK_MEM,
    SOCKET_BUFFER_BYTES,
    engine,
    large_work_mem,
    raw_connection,
    session_options,
)


def _setting(url: str, name: str) -> str:
    with engine(url).connect() as conn:
        return conn.execute(sa.text(f"SHOW {name}")).scalar_one()


def _with_options(url: str, options: str) -> str:
    return make_url(url).update_query_dict({"options": options}).render_as_string(hide_password=False)


def test_project_sessions_run_without_jit(database_url: str) -> None:
    assert _setting(database_url, "jit") == "off"


def test_options_of_the_url_are_kept_beside_jit_off(database_url: str) -> None:
    url = _with_options(database_url, "-c statement_timeout=4321")
    assert _setting(url, "statement_timeout") == "4321ms"
    assert _setting(url, "jit") == "off"


def test_a_url_that_sets_jit_decides_it(database_url: str) -> None:
    assert _setting(_with_options(database_url, "-c jit=on"), "jit") == "on"


def test_session_options_merge_without_repeating_jit() -> None:
    assert session_options("postgresql+psycopg://u@h/d") == "-c jit=off"
    assert (
        session_options("postgresql+psycopg://u@h/d?options=-c%20work_mem%3D64MB")
        == "-c work_mem=64MB -c jit=off"
    )
    assert session_options("postgresql+psycopg://u@h/d?options=-c%20jit%3Don") == "-c jit=on"


def _kernel_limit(name: str) -> int:
    path = Path("/proc/sys/net/core") / name
    if not path.exists():
        pytest.skip(f"{path} is not readable here: the kernel's socket buffer limits are unknown")
    return int(path.read_text())


def test_project_connections_ask_for_wide_socket_buffers(database_url: str) -> None:
    # the kernel grants min(asked, net.core.*mem_max) and reports it doubled; the defaults are about 200 KB
    wanted = {
        socket.SO_SNDBUF: min(SOCKET_BUFFER_BYTES, _kernel_limit("wmem_max")),
        socket.SO_RCVBUF: min(SOCKET_BUFFER_BYTES, _kernel_limit("rmem_max")),
    }
    with engine(database_url).connect() as conn:
        sock = socket.socket(fileno=raw_connection(conn).fileno())
        try:
            granted = {option: sock.getsockopt(socket.SOL_SOCKET, option) for option in wanted}
        finally:
            sock.detach()
    assert granted == {option: 2 * size for option, size in wanted.items()}


def test_large_work_mem_holds_for_the_statements_inside_only(database_url: str) -> None:
    with engine(database_url).connect() as conn, conn.begin():
        before = conn.execute(sa.text("SHOW work_mem")).scalar_one()
        assert before != LARGE_WORK_MEM
        with large_work_mem(conn):
            assert conn.execute(sa.text("SHOW work_mem")).scalar_one() == LARGE_WORK_MEM
        assert conn.execute(sa.text("SHOW work_mem")).scalar_one() == before
