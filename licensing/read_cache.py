"""A per-process memory of the reads every download request repeats, kept for at most a second.

Each download asks the same few questions (whose token is this, which file is that, does this
person hold a live grant, where are the bytes) and Django's ORM spends more CPU building each
query (0.3 to 1 ms) than everything else in the request together. Answers remembered here are
forgotten:

- after `MAX_AGE` (one second): a change made in another process (a revocation, a withdrawal, a
  new license version, a deactivated account) takes effect everywhere within a second. Only
  what cannot change is kept longer (the files of a sealed version), and then whatever in it can
  change (their artifact's phase) is checked on every use against an answer at most a second
  old;
- at once, in this process, whenever it sends the database anything but a SELECT (an execute
  wrapper on every connection): here a change is effective on the very next request, as if
  nothing were remembered. Only `writes_unremarked` bookkeeping is exempt.

Remembered values are shared between threads: callers must treat them as read-only.
"""

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

MAX_AGE = 1.0  # seconds
MAX_ENTRIES = 20_000

T = TypeVar("T")

_clock = time.monotonic  # a name of its own, so that tests can move it

_entries: dict[Hashable, tuple[float, int, Any]] = {}
_generation = 0
_lock = threading.Lock()
_unremarked = threading.local()


def remembered(
    key: Hashable,
    load: Callable[[], T],
    *,
    max_age: float | Callable[[T], float] = MAX_AGE,
    still_valid: Callable[[T], bool] | None = None,
) -> T:
    """`load()`'s answer, from memory when it was loaded under `max_age` seconds ago, this
    process has written nothing since, and `still_valid` (if given) accepts it.

    Only an answer that cannot change may be kept longer than `MAX_AGE` (`max_age` may depend
    on the answer), and then whatever in it can change must be checked by `still_valid`
    against answers no older than `MAX_AGE`."""
    now = _clock()
    hit = _entries.get(key)
    if (
        hit is not None
        and hit[0] > now
        and hit[1] == _generation
        and (still_valid is None or still_valid(hit[2]))
    ):
        return hit[2]  # type: ignore[no-any-return]
    # Read before loading: a write while `load()` runs makes this answer stale at once.
    generation = _generation
    value = load()
    keep = max_age(value) if callable(max_age) else max_age
    with _lock:
        if len(_entries) >= MAX_ENTRIES:
            _entries.clear()
        _entries[key] = (now + keep, generation, value)
    return value


def forget() -> None:
    """Drop every remembered answer (and any being loaded right now)."""
    global _generation
    with _lock:
        _generation += 1
        _entries.clear()


@contextmanager
def writes_unremarked() -> Iterator[None]:
    """Writes in this block (in this thread) forget nothing: for bookkeeping that no remembered
    answer depends on, such as a token's time of last use."""
    _unremarked.active = True
    try:
        yield
    finally:
        _unremarked.active = False


def _forget_on_write(
    execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    if not (isinstance(sql, str) and sql.lstrip()[:6].upper() == "SELECT") and not getattr(
        _unremarked, "active", False
    ):
        forget()
    return execute(sql, params, many, context)


def _watch(connection: BaseDatabaseWrapper) -> None:
    if _forget_on_write not in connection.execute_wrappers:
        # First in the list: `connection.execute_wrapper()` pops the last one on its way out.
        connection.execute_wrappers.insert(0, _forget_on_write)


def _connection_created(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    _watch(connection)


connection_created.connect(_connection_created, dispatch_uid="licensing.read_cache")
for _connection in connections.all(initialized_only=True):
    _watch(_connection)
