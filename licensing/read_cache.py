"""A per-process memory of the reads every download request repeats.

Each download asks the same few questions (whose token is this, which file is that, does this
person hold a live grant, where are the bytes) and Django's ORM spends more CPU building each
query (0.3 to 1 ms) than everything else in the request together. Answers remembered here are
forgotten:

- within `MAX_AGE` (a second) of a change anywhere: every process that writes to the database
  through Django announces it after the commit (one Redis INCR of a shared generation), and
  every process looks at that generation at most once a second, forgetting everything when it
  moved (or when Redis cannot say). A revocation, a withdrawal, a new license version, a
  deactivated account takes effect everywhere within a second;
- at once, in this process, whenever it sends the database anything but a SELECT (an execute
  wrapper on every connection): here a change is effective on the very next request, as if
  nothing were remembered. Only `writes_unremarked` bookkeeping is exempt, and announces
  nothing;
- after `KEEP` (a minute) in any case: the bound for a change made outside Weightgate (psql),
  which announces nothing.

Remembered values are shared between threads: callers must treat them as read-only.
"""

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from config.redis_client import redis_client

logger = logging.getLogger(__name__)

MAX_AGE = 1.0  # seconds: how long a change elsewhere may go unseen
KEEP = 60.0  # seconds an answer is kept while no change is announced
MAX_ENTRIES = 20_000
GENERATION_KEY = "read-cache:generation"  # moved by every announced change
# Statements that change no row: reads, and a transaction's own bookkeeping.
_NOT_WRITES = ("SELECT", "SAVEPOINT", "RELEASE", "ROLLBACK", "SET ", "SHOW ")

T = TypeVar("T")

_clock = time.monotonic  # a name of its own, so that tests can move it

_entries: dict[Hashable, tuple[float, int, Any]] = {}
_generation = 0
_lock = threading.Lock()
_unremarked = threading.local()
_shared_seen: bytes | str | None = None  # the shared generation at the last look
_looked_at = float("-inf")
_look_lock = threading.Lock()


def _look(now: float) -> None:
    """At most once a second: forget everything if another process announced a change since
    the last look, or if Redis cannot tell."""
    global _shared_seen, _looked_at
    if now - _looked_at < MAX_AGE or not _look_lock.acquire(blocking=False):
        return  # looked recently, or another thread is looking right now
    try:
        try:
            seen = redis_client().get(GENERATION_KEY)
            moved = seen != _shared_seen
        except redis.RedisError:
            seen, moved = None, True
        if moved:
            forget()
        _shared_seen, _looked_at = seen, now
    finally:
        _look_lock.release()


def remembered(
    key: Hashable,
    load: Callable[[], T],
    *,
    max_age: float | Callable[[T], float] = KEEP,
    still_valid: Callable[[T], bool] | None = None,
) -> T:
    """`load()`'s answer, from memory when it was loaded under `max_age` seconds ago, nothing
    was written since (here, or announced elsewhere), and `still_valid` (if given) accepts it.

    Only an answer that cannot change may be kept longer than `KEEP` (`max_age` may depend on
    the answer), and then whatever in it can change must be checked by `still_valid` against
    remembered answers."""
    now = _clock()
    _look(now)
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


def _announce() -> None:
    """Tell every process that something changed (after the commit: they reload what was
    committed). Without Redis they cannot hear it: their answers lapse after `KEEP`."""
    try:
        redis_client().incr(GENERATION_KEY)
    except redis.RedisError as error:
        logger.warning("read cache: change not announced (%s)", type(error).__name__)


def _forget_on_write(
    execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    if (isinstance(sql, str) and sql.lstrip()[:9].upper().startswith(_NOT_WRITES)) or getattr(
        _unremarked, "active", False
    ):
        return execute(sql, params, many, context)
    forget()
    result = execute(sql, params, many, context)
    connection = context["connection"]
    # Once per transaction (run at once outside one, the statement having committed).
    if not any(entry[1] is _announce for entry in connection.run_on_commit):
        connection.on_commit(_announce)
    return result


def _watch(connection: BaseDatabaseWrapper) -> None:
    if _forget_on_write not in connection.execute_wrappers:
        # First in the list: `connection.execute_wrapper()` pops the last one on its way out.
        connection.execute_wrappers.insert(0, _forget_on_write)


def _connection_created(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    _watch(connection)


connection_created.connect(_connection_created, dispatch_uid="licensing.read_cache")
for _connection in connections.all(initialized_only=True):
    _watch(_connection)
