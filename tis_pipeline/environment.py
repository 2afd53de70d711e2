"""Point the process at the project's database and Dagster instance before anything Dagster is imported.

``TIS_DATABASE_URL`` unset -> the embedded server (started if needed). ``DAGSTER_HOME`` unset ->
``$TIS_HOME/dagster`` holding a link to the repository's ``dagster.yaml``; ``TIS_DAGSTER_PG_URL`` is derived
for dagster-postgres.
"""

from __future__ import annotations

import os
from pathlib import Path

from tis_pipeline.pg import engine as pg
from tis_pipeline.settings import PROJECT_ROOT, tis_home


def prepare(start_embedded: bool = True) -> dict[str, str]:
    """Set the variables every command and Dagster process needs; returns what was set."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    if not os.environ.get("TIS_DATABASE_URL"):
        if not start_embedded:
            return {}
        from tis_pipeline.pg import embedded

        os.environ["TIS_DATABASE_URL"] = embedded.start().url(embedded.PROJECT_DATABASE)
    else:
        os.environ["TIS_DATABASE_URL"] = pg.normalise_url(os.environ["TIS_DATABASE_URL"])
    if not os.environ.get("TIS_DAGSTER_PG_URL"):
        os.environ["TIS_DAGSTER_PG_URL"] = pg.dagster_storage_url()
    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(dagster_home())
    return {k: os.environ[k] for k in ("TIS_DATABASE_URL", "TIS_DAGSTER_PG_URL", "DAGSTER_HOME")}


def dagster_home() -> Path:
    home = tis_home() / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    target = PROJECT_ROOT / "dagster.yaml"
    if not link.exists() or link.resolve() != target:
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    return home
