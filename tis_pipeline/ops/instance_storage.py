"""Dagster's instance storage (runs, event log, schedules) in PostgreSQL on kept connections.

``dagster.yaml`` names ``KeptConnectionPostgresStorage`` as the instance's ``storage: custom``, so every
process that loads the instance gets it: the ``tis`` command, the webserver, the daemon, a run's worker and a
step's process.

Why: dagster-postgres opens and closes a connection for each statement (``NullPool``: a new server backend
each time), and a run of one day stores ~430 events (planned materializations and checks, step starts,
outputs, check evaluations): 20-28 ms an event against 5-6 ms on a kept connection (bench/RESULTS.md). The
webserver switches to kept connections itself (``optimize_for_webserver``); a run's worker, launched by the
daemon or the webserver, did not, so a day materialized from the UI paid ~10 s that ``tis backfill`` did not.
Here every storage holds one connection (``pool_size`` 1 and up to ``POOL_OVERFLOW`` more while threads
share it, as the daemon's do), recycled hourly, with no statement timeout. The event log's schema probes are
remembered once they find what they look for (``remember_found``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

POOL_RECYCLE_S = 3600
POOL_OVERFLOW = 8

# The event log's schema probes (dagster 1.13 SqlEventLogStorage): before storing an asset check's event it
# asks the server whether the asset_check_executions table exists, and before an asset event whether
# asset_keys has an index column (a catalog query each, ~350 in a day's run of every asset: 0.2-0.4 s).
SCHEMA_PROBES = ("has_table", "_has_asset_key_col_on_connection")


def remember_found(probe: Callable[..., bool]) -> Callable[..., bool]:
    """``probe`` (its last argument a table or column name) asked again only until it answers True: a table or
    column this process saw does not go away while it runs (Dagster's own migrations only add them)."""
    found: set[str] = set()

    @functools.wraps(probe)
    def remembered(*args: Any) -> bool:
        if args[-1] in found:
            return True
        answer = probe(*args)
        if answer:
            found.add(args[-1])
        return answer

    return remembered


class KeptConnectionPostgresStorage(DagsterPostgresStorage):
    """dagster-postgres's storage (same tables, config and schema) whose three storages keep their
    connection between statements."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for storage in (self.run_storage, self.event_log_storage, self.schedule_storage):
            storage.optimize_for_webserver(
                statement_timeout=0, pool_recycle=POOL_RECYCLE_S, max_overflow=POOL_OVERFLOW
            )
        events = self.event_log_storage
        for probe in SCHEMA_PROBES:
            # guarded: a Dagster release that renames a probe loses only this saving (test_fixed_cost counts)
            if callable(getattr(events, probe, None)):
                setattr(events, probe, remember_found(getattr(events, probe)))

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> KeptConnectionPostgresStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
