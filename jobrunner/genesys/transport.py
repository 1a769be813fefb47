"""Our transport under the SDK's ApiClient: no retries, real timeouts, our own errors.

The SDK's own transport silently re-sends POSTs and retries 429s (urllib3 Retry with POST
allowed) and has no timeouts. Ours sends each request once, with explicit connect and read
timeouts, and raises every network failure as a `TransportError` that says whether the request
may have reached the server. Retrying is the runner's job, because only the runner knows
whether a retry could create a person twice.

At debug level it logs one `http.request` event per request, token requests included: method,
route (ids replaced by {id}), status or network error, duration and the retry decision the
answer implies. Never a header, a body, a query value or a token.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from jobrunner.genesys.errors import TransportError, _transport_error
from jobrunner.log import get_logger

log = get_logger("jobrunner.genesys")

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0

# A path segment kept as it is in a logged route: a word or an API version. Anything else
# (a UUID, a number, an encoded value) becomes {id}.
_ROUTE_WORD = re.compile(r"[A-Za-z]+|v\d+")
TOKEN_PATH = "/oauth/token"


class _Response:
    """What the SDK expects back from a transport (the shape of its RESTResponse)."""

    def __init__(self, status: int, reason: str, data: str, headers: Any) -> None:
        self.status = status
        self.reason = reason
        self.data = data
        self._headers = headers

    def getheaders(self) -> Any:
        return self._headers

    def getheader(self, name: str, default: Any = None) -> Any:
        return self._headers.get(name, default)


def _route(url: str) -> str:
    """The path of `url` with every id replaced by {id}: "/api/v2/users/{id}"."""
    path = urlsplit(url).path
    return "/".join(
        part if not part or _ROUTE_WORD.fullmatch(part) else "{id}" for part in path.split("/")
    )


def _retry_decision(
    token_request: bool, status: int | None, network: str | None, had_token: bool = False
) -> str:
    """What the client layer (or, for the API, the runner) does after this answer."""
    if network is not None:
        if token_request and network == "connect":
            return "no retry"  # a wrong environment, most likely: stop at once
        return "back off and retry"
    assert status is not None
    if 200 <= status <= 205:
        return "ok"
    if status in (408, 429) or status >= 500:
        if token_request:
            return "back off and retry"
        return "every worker waits Retry-After" if status == 429 else "back off and retry"
    if token_request:
        # A refusal of credentials that got a token before may pass (revocations propagate).
        return "wait, then again" if had_token and status in (400, 401) else "no retry"
    if status == 401:
        return "new token, then again"
    return "no retry"


Decide = Callable[[bool, int | None, str | None], str]


def _make_transport(
    pool_size: int,
    connect_timeout: float,
    read_timeout: float,
    decide: Decide = _retry_decision,
) -> Any:
    import certifi
    import urllib3
    from PureCloudPlatformClientV2.abstract_http_client import AbstractHttpClient
    from PureCloudPlatformClientV2.rest import ApiException
    from urllib3 import exceptions as ux

    class Transport(AbstractHttpClient):  # type: ignore[misc]
        """No retries, real timeouts, our own errors."""

        def __init__(self) -> None:
            super().__init__()
            self._local = threading.local()  # each thread's last token answer
            self.pool = urllib3.PoolManager(
                num_pools=4,
                maxsize=pool_size,
                block=True,
                retries=False,
                timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
                cert_reqs="CERT_REQUIRED",
                ca_certs=certifi.where(),
            )

        def request(self, options: Any) -> Any:
            method = options.method
            url = options.url
            route = _route(url)
            headers = dict(options.headers or {})
            headers.setdefault("Content-Type", "application/json")
            body: bytes | None = None
            if method in ("POST", "PUT", "PATCH"):
                if headers["Content-Type"] == "application/x-www-form-urlencoded":
                    body = urlencode(options.post_params or {}).encode()
                else:
                    body = json.dumps(options.body).encode() if options.body is not None else b"{}"
            if options.query_params:
                url += "?" + urlencode(options.query_params, doseq=True)
            started = time.perf_counter()
            try:
                r = self._send(method, url, body, headers)
            except TransportError as error:
                self._log(method, route, options.query_params, started, network=error.kind)
                raise
            data = r.data.decode("utf-8", errors="replace")
            response = _Response(r.status, r.reason or "", data, r.headers)
            self._log(
                method,
                route,
                options.query_params,
                started,
                status=r.status,
                retry_after=r.headers.get("Retry-After"),
            )
            if not 200 <= r.status <= 205:
                raise ApiException(http_resp=response)
            if route.endswith(TOKEN_PATH):
                self._local.token_answer = data
            return response

        def _send(self, method: str, url: str, body: bytes | None, headers: Any) -> Any:
            try:
                return self.pool.request(
                    method,
                    url,
                    body=body,
                    headers=headers,
                    retries=False,
                    redirect=False,
                    preload_content=True,
                )
            except ux.MaxRetryError as exc:  # urllib3 may still wrap the cause
                raise _transport_error(exc.reason or exc, method) from None
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised as ours
                raise _transport_error(exc, method) from None

        def take_token_answer(self) -> str | None:
            """The body of this thread's last token answer (the SDK keeps only the token)."""
            answer: str | None = getattr(self._local, "token_answer", None)
            self._local.token_answer = None
            return answer

        @staticmethod
        def _log(
            method: str,
            route: str,
            query: Any,
            started: float,
            status: int | None = None,
            network: str | None = None,
            retry_after: str | None = None,
        ) -> None:
            """One debug event per request. Names only: no header, body or query value."""
            fields: dict[str, Any] = {"method": method, "route": route}
            if query:
                fields["query"] = ",".join(sorted(str(k) for k in query))
            if network is None:
                fields["status"] = status
            else:
                fields["network_error"] = network
            fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
            fields["retry"] = decide(route.endswith(TOKEN_PATH), status, network)
            if retry_after is not None:
                try:
                    fields["retry_after_s"] = float(retry_after)
                except ValueError:
                    fields["retry_after_s"] = None
            log.debug("http.request", **fields)

    return Transport()
