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
Expectations and its context, empyrical's scipy.stats and scipy.optimize). A domain names them with
``warm_before(step_key, loader)``; in a run whose plan holds that step, the first step that waits on
PostgreSQL for seconds in one statement (``warm_while_waiting``: the read of the rows GX judges) calls them
on a thread of their own meanwhile, instead of the steps that need them paying for them later. Not at the
run's start, nor beside steps of many short statements: a thread running Python keeps the interpreter's lock
for up to 5 ms each time the other one gets an answer back from the server and wants it again, so a step of
thousands of round trips (the ingest's, the rollups', Dagster's own event writes) would pay more than the
imports cost (measured: a 50-symbol day 1-2 s slower with the imports at its start). A step's own process
(the multiprocess executor's, a Celery worker's: it runs one step, which imports what it needs) warms
nothing: the imports then happen on first use, as they would anyway.

**Heavy imports without the collector.** A library's import makes hundreds of thousands of objects that
live as long as the process and almost no garbage (GX's pydantic models, scipy, matplotlib): the collector's
passes during it are wasted, ~15 % of the import's CPU (~0.3 s of GX, empyrical and pyplot; bench/RESULTS.md).
``import_heavy`` imports with the collector paused (``collector_paused``: nested and concurrent pauses count;
the collector comes back when the last ends, if it was on before the first).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import threading
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType

_lock = threading.Lock()
_running = 0  # runs of this process between run_started and run_ended (a test process may nest them)
_loaders: dict[str, list[Callable[[], object]]] = {}  # step key -> what the step imports on first use
_warmed: set[Callable[[], object]] = set()  # loaders already called (or being called) in this process
_pending: list[Callable[[], object]] = []  # the running runs' loaders, for their first wait
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


def run_started(steps: Iterable[str] | None) -> None:
    """A run starts in this process: the heap frozen (the first run's start) and the loaders of ``steps``
    (the step keys of the run's plan; None: nothing to warm, e.g. a step's own process) not called yet kept
    for the run's first wait on the server (``warm_while_waiting``)."""
    global _running  # noqa: PLW0603 - one count per process
    with _lock:
        _running += 1
        if _running == 1:
            gc.freeze()
        if steps is None:
            return
        keys = set(steps)
        # in the order they were named (the definitions' import order: roughly the order of the steps)
        loaders = [f for key, named in _loaders.items() if key in keys for f in named if f not in _warmed]
        _pending.extend(f for f in dict.fromkeys(loaders) if f not in _pending)


def warm_while_waiting() -> threading.Thread | None:
    """Called by a step that is about to wait on the server for seconds in one statement: the run's loaders
    not called yet are called on a thread of their own (``tis-warm-imports``) meanwhile; returns that thread
    (None when there is nothing to warm)."""
    with _lock:
        loaders = [f for f in _pending if f not in _warmed]
        _pending.clear()
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
            _pending.clear()


def freeze_alive_objects() -> bool:
    """Inside a run (``run_started``): what is alive now kept out of the collector's passes until the run's
    end (``gc.freeze``); returns whether it froze (outside a run it does nothing: nothing stays frozen)."""
    with _lock:
        if _running == 0:
            return False
        gc.freeze()
        return True


_pause_lock = threading.Lock()
_pauses = 0  # collector_paused blocks running now (any thread)
_enabled_before_pause = False


@contextlib.contextmanager
def collector_paused(freeze: bool = False) -> Iterator[None]:
    """The cyclic garbage collector off while the block runs (reference counting frees as before); blocks
    may nest or run on several threads at once: the collector is enabled again when the last one ends, if it
    was enabled before the first. ``freeze``: what is alive at the end is frozen first (``gc.freeze``, before
    enabling: the objects made meanwhile would otherwise all be counted as new at once)."""
    global _pauses, _enabled_before_pause  # noqa: PLW0603 - one collector per process
    with _pause_lock:
        if _pauses == 0:
            _enabled_before_pause = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if freeze:
                gc.freeze()
            if _pauses == 0 and _enabled_before_pause:
                gc.enable()


def import_heavy(name: str) -> ModuleType:
    """``importlib.import_module(name)`` with the collector paused (``collector_paused``; once imported, the
    call costs a dictionary lookup and the pause's two lock round trips)."""
    with collector_paused():
        return importlib.import_module(name)
