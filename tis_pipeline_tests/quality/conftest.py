"""The quality tests keep Great Expectations' project (suites, results, Data Docs) in a temporary folder."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _gx_dir(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("gx")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIS_GX_DIR", str(root))
        patch.setenv("GX_ANALYTICS_ENABLED", "false")
        yield root
