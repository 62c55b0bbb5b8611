"""A small JSON-over-HTTP client on the standard library, for OpenAI-compatible servers.

Retries with exponential backoff and jitter on HTTP 429, 500, 502, 503, 504 and on connection
errors and timeouts (a ``Retry-After`` header sets the wait); any other 4xx is the caller's
mistake and fails at once with the server's message. ``sleep`` is injectable so that tests do
not wait. The API key goes into the ``Authorization`` header only, never into an error.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from . import BackendError

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_WAIT_S = 60.0


class HTTPStatusError(BackendError):
    """The server answered with an error status (after any retries); ``status`` says which."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def redacted_url(url: str) -> str:
    """``url`` without user:password and query (where some services put keys)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def error_message(body: bytes, limit: int = 300) -> str:
    """The server's error message (OpenAI ``{"error": {"message"}}``, ``{"message"}``,
    ``{"detail"}`` or the raw body) as one line of at most ``limit`` characters."""
    text = body.decode("utf-8", "replace")
    try:
        got = json.loads(text)
    except ValueError:
        got = None
    if isinstance(got, dict):
        err = got.get("error", got)
        if isinstance(err, dict):
            err = err.get("message") or err.get("detail") or err
        text = err if isinstance(err, str) else json.dumps(err)
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (a number of seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class JSONClient:
    """``get(path)`` / ``post(path, payload)`` against ``base_url`` (e.g. ``http://host:8000/v1``),
    returning the decoded JSON body. ``max_retries``: retries after the first attempt;
    ``backoff``: the first wait in seconds, doubled each retry, plus up to as much jitter."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0,
                 max_retries: int = 5, backoff: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.sleep = sleep
        self._rng = rng or random.Random()

    def get(self, path: str, retry_connection: bool = True):
        """GET; ``retry_connection=False`` fails at once when the server cannot be reached."""
        return self._request("GET", path, None, retry_connection)

    def post(self, path: str, payload: dict):
        return self._request("POST", path, payload, True)

    # -- internals -------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _build(self, method: str, path: str, payload: dict | None) -> urllib.request.Request:
        headers = {"Accept": "application/json"}
        data = None
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return urllib.request.Request(self._url(path), data=data, headers=headers, method=method)

    def _wait(self, attempt: int, hint: float | None) -> float:
        if hint is not None:
            return min(hint, MAX_WAIT_S)
        base = self.backoff * 2**attempt
        return min(base + self._rng.uniform(0, base), MAX_WAIT_S)

    def _request(self, method: str, path: str, payload: dict | None, retry_connection: bool):
        url = redacted_url(self._url(path))
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                with urllib.request.urlopen(self._build(method, path, payload), timeout=self.timeout) as r:
                    body = r.read()
            except urllib.error.HTTPError as e:
                msg = error_message(e.read() or str(e.reason).encode())
                if e.code not in RETRY_STATUS or last:
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    raise HTTPStatusError(f"{method} {url}: HTTP {e.code}{tries}: {msg}", e.code) from None
                self.sleep(self._wait(attempt, retry_after(e.headers.get("Retry-After"))))
                continue
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                reason = getattr(e, "reason", None) or e
                if not retry_connection or last:
                    raise BackendError(f"cannot reach {url}: {reason}") from None
                self.sleep(self._wait(attempt, None))
                continue
            try:
                return json.loads(body)
            except ValueError:
                raise BackendError(f"{method} {url}: the server's answer is not JSON: "
                                   f"{error_message(body, 120)}") from None
        raise AssertionError("unreachable")  # the loop returns or raises


__all__ = ["HTTPStatusError", "JSONClient", "RETRY_STATUS", "error_message", "redacted_url",
           "retry_after"]
