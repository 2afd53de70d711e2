"""Modules a library imports at its top for features tis never uses, imported when first used instead.

Great Expectations imports ``scipy.stats`` and ``altair`` when it is imported (for the KL divergence and
Kolmogorov-Smirnov expectations and their charts, none of which the registry's rules use): ~0.9 s of CPU in
every process that judges with GX, more than a third of its import. ``deferring(names)`` puts a stand-in for
each of ``names`` not imported yet into ``sys.modules`` while its block runs (the import of GX) and takes
them out after: GX's modules then hold the stand-in, whose first attribute asked for imports the real module
(``importlib``, as ``import`` would) and answers from it. Nothing else is changed: any other code importing
the module after the block gets the real one; code that imports it during the block (another thread) gets
the stand-in, which answers the same.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

_lock = threading.Lock()


class Deferred(types.ModuleType):
    """A stand-in for the module of its name: any attribute it lacks (everything but a module's bare
    ``__name__``, ``__doc__``, ``__spec__``…) is the real module's, imported on the first such use."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(real_module(self), attr)


def real_module(stand_in: Deferred) -> types.ModuleType:
    """The module ``stand_in`` stands for, imported now if it was not (the stand-in leaves ``sys.modules``
    first, so that the import finds and runs the real module)."""
    name = stand_in.__name__
    with _lock:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
    return importlib.import_module(name)


@contextlib.contextmanager
def deferring(names: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Stand-ins for those of ``names`` not imported yet, in ``sys.modules`` while the block runs; yields
    the names deferred."""
    with _lock:
        deferred = tuple(name for name in names if name not in sys.modules)
        stand_ins = {name: Deferred(name) for name in deferred}
        sys.modules.update(stand_ins)
    try:
        yield deferred
    finally:
        with _lock:
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]
