"""What the process executing a run does at the run's start and end (no Dagster here: the resource that
every step uses, ``resources.PostgresResource``, calls ``run_started`` and ``run_ended`` from its setup and
teardown, so that `tis backfill`, the daemon's run worker and a test's ``materialize`` all do the same).

**The heap of the run's start frozen.** The objects alive when a run starts (the modules of Dagster, pandas,
SQLAlchemy, GX and the project, the definitions, the instance: ~400,000) are kept out of the cyclic garbage
collector's passes while the run runs (``gc.freeze``) and given back when the last run of the process ends
(``gc.unfreeze``). A full pass walks every tracked object, and the steps of a run (their imports, their
frames) trigger several: with the start's objects in them the collector took ~2 s of a 50-symbol day (8 full
passes), ~0.4 s with them frozen (bench/RESULTS.md). Reference counting frees what the run drops as before;
only garbage in cycles among the frozen objects waits for the unfreeze. A step that allocates much
(``freeze_alive_objects``: the trading day from its first day of many events) freezes what is alive then as
well, until the run's end.

**Heavy imports warmed.** A step imports some libraries on first use (seconds of CPU in all: Great
Expectations and its context, empyrical's scipy.stats, matplotlib's pyplot). A domain names them with
``warm_before(step_key, loader)``; a run whose plan holds that step calls the loaders on one thread of its
own from its start, so that the imports run while the first steps wait on PostgreSQL (the ingest's COPY, the
rollups' and DSI's statements) instead of inside the step that needs them. A step's own process (the
multiprocess executor's, a Celery worker's: it runs one step, which imports what it needs) warms nothing:
the imports then happen on first use, as they would anyway.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

_lock = threading.Lock()
_running = 0  # runs of this process between run_started and run_ended (a test process may nest them)
_loaders: dict[str, list[Callable[[], object]]] = {}  # step key -> what the step imports on first use
_warmed: set[Callable[[], object]] = set()  # loaders already called (or being called) in this process
# jobs whose every step runs in a process of its own (Celery's workers): warming the whole run's imports there
# would cost each step's process the imports of the others
STEP_PROCESS_JOBS: set[str] = set()


def warm_before(step_key: str, loader: Callable[[], object]) -> None:
    """``loader`` (an import, say) is called on the warm-up thread of every run whose plan holds the step
    ``step_key`` (an asset's or a check's op name; once per process: a loader called before is not called
    again)."""
    with _lock:
        if loader not in _loaders.setdefault(step_key, []):
            _loaders[step_key].append(loader)


def run_started(steps: Iterable[str] | None, *, warm: bool = True) -> threading.Thread | None:
    """A run starts in this process: the heap frozen (the first run's start) and, when ``warm``, the warm-up
    thread of the loaders of ``steps`` (the step keys of the run's plan; None: unknown) started; returns
    that thread (None when there is nothing to warm)."""
    global _running  # noqa: PLW0603 - one count per process
    with _lock:
        _running += 1
        if _running == 1:
            gc.freeze()
        if not warm or steps is None:
            return None
        keys = set(steps)
        # in the order they were named (the definitions' import order: roughly the order of the steps)
        loaders = [f for key, named in _loaders.items() if key in keys for f in named if f not in _warmed]
        loaders = list(dict.fromkeys(loaders))  # one call each
        _warmed.update(loaders)
    if not loaders:
        return None
    thread = threading.Thread(target=_call_each, args=(loaders,), name="tis-warm-imports", daemon=True)
    thread.start()
    return thread


def _call_each(loaders: list[Callable[[], object]]) -> None:
    for loader in loaders:
        # a failing import fails again, with its traceback, in the step that needs it
        with contextlib.suppress(Exception):
            loader()


def run_ended() -> None:
    """A run of this process ends (also when it failed): when it was the last one running, every frozen object
    goes back to the collector (``gc.unfreeze``)."""
    global _running  # noqa: PLW0603 - one count per process
    with _lock:
        if _running == 0:
            return
        _running -= 1
        if _running == 0:
            gc.unfreeze()


def freeze_alive_objects() -> bool:
    """Inside a run (``run_started``): what is alive now kept out of the collector's passes until the run's
    end (``gc.freeze``); returns whether it froze (outside a run it does nothing: nothing stays frozen)."""
    with _lock:
        if _running == 0:
            return False
        gc.freeze()
        return True
