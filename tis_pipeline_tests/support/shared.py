"""Where the team's shared files (the seed, the real market data) live: ``../shared`` next to the checkout.

``TIS_SHARED_DIR`` overrides; otherwise the nearest ``shared`` folder beside the repository or any folder
above it, so that a clone in a deeper directory (as CI makes) still finds it. Tests that need it skip when it
is absent.
"""

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    explicit = os.environ.get("TIS_SHARED_DIR")
    if explicit:
        return Path(explicit)
    for folder in _REPO.parents:
        candidate = folder / "shared"
        if (candidate / "seed").is_dir() or (candidate / "data").is_dir():
            return candidate
    return _REPO.parent / "shared"


SHARED = shared_dir()
