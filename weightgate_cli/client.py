"""HTTP to the Weightgate API: keep-alive HTTP/1.1 connections (`transport.Transport`), retries
with backoff for network errors and 502/503/504, waits out a 429's Retry-After, and turns the
server's error body ({"error": {"code", "message"}} or the Hub's {"error": "..."}) into an error
with the exit status that fits."""

import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from weightgate_cli.config import Credentials
from weightgate_cli.errors import AccessError, CliError, NotFoundError, UsageError
from weightgate_cli.transport import Reply, TransferError, Transport

USER_AGENT = "weightgate-cli/0.1"
RETRY_STATUSES = {502, 503, 504}


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as error:
        raise UsageError(f"{name} must be a number, not {raw!r}") from error
    if value < 0:
        raise UsageError(f"{name} must not be negative")
    return value


@dataclass(frozen=True)
class Tuning:
    """How hard to try. Environment overrides exist for tests and for very slow links."""

    retries: int = 5  # further attempts after a network error or a 5xx
    backoff: float = 0.5  # seconds before the first retry; doubles, with jitter, up to 30 s
    max_retry_after: float = 300.0  # a longer Retry-After is reported, not slept through
    timeout: float = 60.0  # per read/connect: a stalled connection is retried, not waited on

    @classmethod
    def from_env(cls) -> "Tuning":
        return cls(
            retries=int(_env_number("WEIGHTGATE_RETRIES", cls.retries)),
            backoff=_env_number("WEIGHTGATE_BACKOFF", cls.backoff),
            max_retry_after=_env_number("WEIGHTGATE_MAX_RETRY_AFTER", cls.max_retry_after),
            timeout=_env_number("WEIGHTGATE_TIMEOUT", cls.timeout),
        )

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter: retries from many workers do not line up."""
        ceiling = min(30.0, self.backoff * 2.0**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 (jitter, not secrets)


def server_message(response: Reply) -> str:
    """The person-readable reason a server gave, whatever shape it came in."""
    message = ""
    if "json" in response.headers.get("content-type", ""):
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict):
                message = str(error.get("message") or error.get("code") or "")
            elif isinstance(error, str):
                message = error
            elif isinstance(body.get("detail"), str):
                message = body["detail"]
    message = message or response.headers.get("X-Error-Message", "")
    if not message and response.headers.get("content-type", "").startswith("text/plain"):
        message = response.text[:200].strip()
    return message or f"HTTP {response.status_code} {response.reason_phrase}"


def retry_after(response: Reply) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return 1.0


def error_for(response: Reply, what: str) -> CliError:
    return status_error(response.status_code, what, server_message(response))


def status_error(status: int, what: str, message: str) -> CliError:
    """The error, with the exit status that fits, for an HTTP refusal from any server."""
    if status in (401, 403):
        return AccessError(f"{what}: {message}")
    if status == 404:
        return NotFoundError(f"{what}: {message}")
    return CliError(f"{what}: {message} (HTTP {status})")


def quote_path(path: str) -> str:
    """A file path in a URL: each segment percent-encoded, the slashes kept."""
    return quote(path, safe="/")


class Api:
    """The Weightgate API at one endpoint, with the caller's token (if any)."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        tuning: Tuning | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.endpoint = credentials.endpoint
        self.token = credentials.token
        self.tuning = tuning or Tuning.from_env()
        self.notice = notice or (lambda message: None)
        self.headers = {"Accept": "application/json"}
        if credentials.token:
            self.headers["Authorization"] = f"Bearer {credentials.token}"
        self.transport = Transport(timeout=self.tuning.timeout, user_agent=USER_AGENT)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "Api":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        path: str,
        *,
        what: str,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        allow: tuple[int, ...] = (),
    ) -> Reply:
        """GET `path` (relative to the endpoint). Statuses in `allow` are returned to the
        caller instead of raised."""
        url = self.endpoint.rstrip("/") + path + (f"?{urlencode(params)}" if params else "")
        attempt = 0
        while True:
            try:
                # Never a redirect: it would carry the token to wherever it points.
                response = self.transport.fetch(
                    url, {**self.headers, **(headers or {})}, follow_redirects=False
                )
            except TransferError as error:
                if attempt >= self.tuning.retries:
                    raise CliError(
                        f"{what}: cannot reach {self.endpoint} ({error}) after {attempt + 1} "
                        "attempts"
                    ) from error
                wait = self.tuning.delay(attempt)
                self.notice(f"{what}: {error}; retrying in {wait:.1f}s")
                time.sleep(wait)
                attempt += 1
                continue
            status = response.status_code
            if status in allow:
                return response
            if status == 429:
                wait = retry_after(response)
                if wait > self.tuning.max_retry_after or attempt >= self.tuning.retries:
                    raise CliError(
                        f"{what}: rate limited: {server_message(response)} "
                        f"(retry after {wait:.0f}s)"
                    )
                self.notice(f"{what}: {server_message(response)}; waiting {wait:.0f}s")
                time.sleep(wait)
                attempt += 1
                continue
            if status in RETRY_STATUSES and attempt < self.tuning.retries:
                wait = self.tuning.delay(attempt)
                self.notice(f"{what}: HTTP {status}; retrying in {wait:.1f}s")
                time.sleep(wait)
                attempt += 1
                continue
            if 300 <= status < 400:
                raise CliError(
                    f"{what}: the server redirected to {response.headers.get('Location')!r}; "
                    "not followed, as the request carries your token (is the endpoint right?)"
                )
            if status >= 400:
                raise error_for(response, what)
            return response

    def get_json(self, path: str, *, what: str, params: dict[str, str] | None = None) -> Any:
        response = self.request(path, what=what, params=params)
        try:
            return response.json()
        except ValueError as error:
            raise CliError(f"{what}: the server did not answer JSON") from error

    def pages(
        self, path: str, *, what: str, params: dict[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every result of a paginated list ({count, next, results})."""
        page = self.get_json(path, what=what, params=params)
        while True:
            if not isinstance(page, dict) or not isinstance(page.get("results"), list):
                raise CliError(f"{what}: unexpected answer (no results list)")
            yield from page["results"]
            following = page.get("next")
            if not following:
                return
            # Only the path and query of `next` are used, against our endpoint: a server behind
            # a misconfigured proxy must not be able to send the token to another host.
            parts = urlsplit(following)
            path_ = parts.path
            prefix = urlsplit(self.endpoint).path.rstrip("/")
            if prefix and path_.startswith(prefix + "/"):
                path_ = path_[len(prefix) :]  # the client adds the endpoint's own path
            page = self.get_json(path_ + (f"?{parts.query}" if parts.query else ""), what=what)

    def model_path(self, repo_id: str) -> str:
        org, name = repo_id.split("/", 1)
        return f"/api/v1/models/{quote(org, safe='')}/{quote(name, safe='')}/"

    def version_path(self, repo_id: str, revision: str) -> str:
        return f"{self.model_path(repo_id)}versions/{quote(revision, safe='')}/"
