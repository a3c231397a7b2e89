"""Handing out downloads once `file_download_decision` said yes: where the bytes are, a
presigned URL for them, per-token rate limits and per-grant daily quotas (Redis), and the
download log (buffered in Redis, written in batches by a Celery task).

Presigning costs about as much CPU as a whole Django request (~0.45 ms), so URLs are cached per
process for a small part of their lifetime: every caller of one file shares one URL, which is
no weaker than handing each its own (a presigned URL is a bearer credential either way).
"""

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import PurePosixPath

import redis
from django.conf import settings
from django.db import connection, transaction
from redis.commands.core import Script

from config.redis_client import redis_client
from licensing import read_cache
from release.models import Blob, DownloadEvent, File, blob_key
from release.storage import s3_client

logger = logging.getLogger(__name__)

BUFFER_KEY = "downloads:buffer"
# While Redis cannot be reached no rate limit, quota or download log can be kept: downloads are
# refused with 503 and this Retry-After rather than served uncounted.
UNAVAILABLE_RETRY_AFTER = 10  # seconds
_URL_CACHE_MAX = 20_000
_url_cache: dict[tuple[str, str, str], tuple[str, float]] = {}
_url_lock = threading.Lock()


@dataclass(frozen=True)
class Location:
    bucket: str
    key: str
    public: bool  # anonymous-read bucket: a plain URL, no signature


def file_location(file: File) -> Location:
    """Where a file's bytes are served from: the public bucket once an open artifact's blob was
    copied there, else the verified blob in the private bucket, else (never published, e.g.
    proprietary for staff and partners) its staging object."""
    # Remembered (licensing.read_cache) until a change is announced, like the file row itself.
    buckets = read_cache.remembered(
        ("buckets", file.sha256),
        lambda: frozenset(Blob.objects.filter(sha256=file.sha256).values_list("bucket", flat=True)),
    )
    if file.artifact.phase == "open" and settings.S3_BUCKET_PUBLIC in buckets:
        return Location(settings.S3_BUCKET_PUBLIC, blob_key(file.sha256), public=True)
    if settings.S3_BUCKET_GATED in buckets:
        return Location(settings.S3_BUCKET_GATED, blob_key(file.sha256), public=False)
    return Location(settings.S3_BUCKET_STAGING, file.storage_key, public=False)


def download_url(file: File) -> str:
    location = file_location(file)
    if location.public:
        return f"{settings.S3_PUBLIC_BASE_URL}/{location.bucket}/{location.key}"
    filename = PurePosixPath(file.path).name
    cache_key = (location.bucket, location.key, filename)
    now = time.monotonic()
    with _url_lock:
        hit = _url_cache.get(cache_key)
    if hit is not None and hit[1] > now:
        return hit[0]
    url = s3_client().generate_presigned_url(
        "get_object",
        Params={
            "Bucket": location.bucket,
            "Key": location.key,
            # The blob is named by its digest; browsers and curl -OJ should save the real name.
            "ResponseContentDisposition": f'attachment; filename="{filename}"',
        },
        ExpiresIn=settings.DOWNLOAD_URL_TTL_SECONDS,
    )
    # Reused for a tenth of its life, so every URL handed out still has 90% of it left.
    reuse = settings.DOWNLOAD_URL_TTL_SECONDS / 10
    with _url_lock:
        if len(_url_cache) >= _URL_CACHE_MAX:
            _url_cache.clear()
        _url_cache[cache_key] = (url, now + reuse)
    return url


@dataclass(frozen=True)
class Throttle:
    allowed: bool
    retry_after: int = 0  # seconds
    message: str = ""
    unavailable: bool = False  # Redis could not be reached: refused, nothing logged


# Draws units from each counter in turn (KEYS[i]: window ARGV[3i-1] seconds, limit ARGV[3i],
# units wanted ARGV[3i+1]) and stops at the first with none left, answering {i, its ttl, units
# drawn before it}; else, when ARGV[1] is 1, pushes the download (the last ARGV) onto the buffer
# (the last KEYS) and answers {0, 0, units drawn}. A counter gives at most an eighth of what it
# has left (at least one), so a counter near its limit hands out single units. One round trip
# for all of a request's Redis work; a counter after one at its limit is not drawn from, and a
# refused download is not logged.
_THROTTLE_SCRIPT = """
local counters = #KEYS - tonumber(ARGV[1])
local drawn = {}
for i = 1, counters do
    redis.call('SET', KEYS[i], 0, 'EX', ARGV[3 * i - 1], 'NX')
    local left = tonumber(ARGV[3 * i]) - tonumber(redis.call('GET', KEYS[i]))
    if left <= 0 then
        return {i, redis.call('TTL', KEYS[i]), unpack(drawn)}
    end
    local units = math.min(tonumber(ARGV[3 * i + 1]), math.max(1, math.floor(left / 8)))
    redis.call('INCRBY', KEYS[i], units)
    drawn[i] = units
end
if ARGV[1] == '1' then
    redis.call('LPUSH', KEYS[#KEYS], ARGV[#ARGV])
end
return {0, 0, unpack(drawn)}
"""

# Units a process draws from a counter at once: the requests it then lets through without a
# round trip to Redis (which costs about as much CPU as the rest of the answer).
LEASE_UNITS = 32
_LEASES_MAX = 20_000
_leases: dict[str, int] = {}  # counter key (its window in the name) -> units drawn, not yet used
_leases_lock = threading.Lock()


@cache
def _throttle_script() -> Script:
    return redis_client().register_script(_THROTTLE_SCRIPT)


def download_throttle(
    *, token_key: str | None, grant_id: str | None, record: str | None = None
) -> Throttle:
    """Per-token requests per minute and per-grant downloads per UTC day, counted in Redis so
    every web process shares them; the token's counter first, and the grant's is not counted
    when the token is over its limit. `record` (a `download_event`) is added to the download
    log when the answer is yes, in the same round trip.

    Units are counted in Redis before they are used, a few at a time (`LEASE_UNITS`, at most an
    eighth of what is left): a process answers from the units it holds, and goes to Redis when
    it runs out or has a download to log. So no counter ever lets more through than its limit;
    near the limit a client may be refused a few requests early while other processes hold
    unused units (they lapse with their window: the key names its minute or day)."""
    counters: list[tuple[str, int, int]] = []  # key, window seconds, limit
    if token_key is not None:
        counters.append(
            (
                f"ratelimit:token:{token_key}:{int(time.time() // 60)}",
                60,
                settings.DOWNLOAD_RATE_PER_MINUTE,
            )
        )
    if grant_id is not None:
        counters.append(
            (
                f"quota:grant:{grant_id}:{datetime.now(UTC).date().isoformat()}",
                86_400,
                settings.DOWNLOAD_DAILY_QUOTA,
            )
        )
    with _leases_lock:
        # Units held go first, in order; from the first counter without one, Redis decides.
        held = 0
        while held < len(counters) and _leases.get(counters[held][0], 0) > 0:
            held += 1
        for key, _, _ in counters[:held]:
            _leases[key] -= 1
    to_draw = counters[held:]
    if not to_draw and record is None:
        return Throttle(True)
    keys = [key for key, _, _ in to_draw]
    args: list[int | str] = [1 if record is not None else 0]
    for _, window, limit in to_draw:
        args += [window, limit, LEASE_UNITS]
    if record is not None:
        keys.append(BUFFER_KEY)
        args.append(record)
    try:
        over, ttl, *drawn = _throttle_script()(keys=keys, args=args)
    except (redis.ConnectionError, redis.TimeoutError) as error:
        logger.warning("download refused: Redis is unreachable (%s)", type(error).__name__)
        return Throttle(
            False,
            UNAVAILABLE_RETRY_AFTER,
            "downloads are paused for a moment (their rate limits cannot be counted); "
            "try again shortly",
            unavailable=True,
        )
    with _leases_lock:
        if len(_leases) >= _LEASES_MAX:
            _leases.clear()  # mostly past windows; what is dropped was counted, never lent
        for (key, _, _), units in zip(to_draw, drawn, strict=False):
            _leases[key] = _leases.get(key, 0) + int(units) - 1  # one is this request's
    if not over:
        return Throttle(True)
    retry_after = max(int(ttl), 1)
    if to_draw[int(over) - 1][0].startswith("ratelimit:"):
        return Throttle(
            False,
            retry_after,
            f"this token made more than {settings.DOWNLOAD_RATE_PER_MINUTE} requests this minute",
        )
    return Throttle(
        False,
        retry_after,
        f"your grant's daily quota of {settings.DOWNLOAD_DAILY_QUOTA} downloads is used up",
    )


def download_event(
    *, file: File, user_id: int | None, token_id: int | None, grant_id: str | None
) -> str:
    """An issued URL as the download log's buffer holds it."""
    return json.dumps(
        {
            "at": datetime.now(UTC).isoformat(),
            "model": file.artifact.version.model_id,
            "version": file.artifact.version.name,
            "artifact": file.artifact.name,
            "path": file.path,
            "user": user_id,
            "token": token_id,
            "grant": grant_id or "",
        }
    )


def downloads_flush(*, batch: int = 5000) -> int:
    """Move buffered download events into the database: the events, and per model, version and
    day counts. Takes from the tail (oldest first) and trims them from Redis only after their
    batch committed: at least once (a crash between commit and trim writes that batch again),
    never lost. A Redis lock keeps two flushes from taking the same batch."""
    client = redis_client()
    lock = client.lock("downloads:flush-lock", timeout=120, blocking=False)
    if not lock.acquire():
        return 0
    try:
        return _flush(client, batch)
    finally:
        lock.release()


def _flush(client: redis.Redis, batch: int) -> int:
    raw = client.lrange(BUFFER_KEY, -batch, -1)
    if not raw:
        return 0
    rows = [json.loads(item) for item in raw]
    counts: dict[tuple[int, str, str], int] = {}
    events = []
    for row in rows:
        at = datetime.fromisoformat(row["at"])
        events.append(
            DownloadEvent(
                at=at,
                model_id=row["model"],
                version=row["version"],
                artifact=row["artifact"],
                path=row["path"],
                user_id=row["user"],
                token_id=row["token"],
                grant=row["grant"],
            )
        )
        day = (row["model"], row["version"], at.date().isoformat())
        counts[day] = counts.get(day, 0) + 1
    # Nothing remembered for downloads depends on their log: these writes forget nothing.
    with read_cache.writes_unremarked(), transaction.atomic():
        DownloadEvent.objects.bulk_create(events)
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO release_downloaddaily (model_id, version, day, count) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (model_id, version, day) "
                "DO UPDATE SET count = release_downloaddaily.count + EXCLUDED.count",
                [(model, version, day, n) for (model, version, day), n in counts.items()],
            )
        # Only this task trims, and new events are pushed at the head: dropping len(raw) from
        # the tail removes exactly the ones just written.
    client.ltrim(BUFFER_KEY, 0, -len(raw) - 1)
    return len(rows)
