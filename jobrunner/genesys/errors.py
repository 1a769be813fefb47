"""Our errors for a call to Genesys, and the mapping from what the SDK and urllib3 raise.

An `ApiError` is an HTTP answer with an error status; a `TransportError` is no answer at all.
Both say whether the server may have acted (`maybe_acted`) and whether trying again may help
(`retryable`); neither ever carries a header, a token or a secret.
"""

from __future__ import annotations

import json
from typing import Any

from jobrunner.errors import JobrunnerError


class CallError(JobrunnerError):
    """A call that did not succeed. `maybe_acted`: the server may have done the work."""

    maybe_acted = False
    retryable = False


class ApiError(CallError):
    """The API answered with an error status."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        retry_after: float | None = None,
        field_names: tuple[str, ...] = (),
    ) -> None:
        self.status = status
        self.code = code or f"http.{status}"
        self.message = message
        self.retry_after = retry_after
        self.field_names = field_names
        # A 5xx from a gateway may come after the API acted on the request.
        self.maybe_acted = status >= 500 or status == 408
        self.retryable = status >= 500 or status in (408, 429)
        super().__init__(f"HTTP {status} {self.code}: {message}")

    @property
    def version_conflict(self) -> bool:
        """Did a PATCH or DELETE fail because the version it sent is not the user's current
        one? Then reading the user again and sending its new version may pass.

        Genesys answers a stale version with a 409 (`general.conflict`) or with a 400 whose
        message contains "does not match the current version". As in the Terraform
        provider's IsVersionMismatch (genesyscloud/util/util_retries.go), any 409 counts,
        whatever its code. Only a call that sends a version can fail so: a create's 409
        means that its email is taken, not this.
        """
        if self.status == 409:
            return True
        return self.status == 400 and _STALE_VERSION in self.message.lower()


# What a 400 for a stale version says (lower case; the message is matched ignoring case).
_STALE_VERSION = "does not match the current version"


class TransportError(CallError):
    """No HTTP answer: refused, timed out, or the connection dropped."""

    retryable = True

    def __init__(self, kind: str, message: str, maybe_acted: bool) -> None:
        self.kind = kind  # connect | timeout | dropped | tls
        self.code = f"network.{kind}"
        self.message = message
        self.maybe_acted = maybe_acted
        super().__init__(message)


def _api_error(status: int, body: str | None, headers: Any) -> ApiError:
    """An error answer (status, JSON body, headers) as an ApiError."""
    code, message = None, ""
    fields: tuple[str, ...] = ()
    try:
        data = json.loads(body or "")
    except ValueError:
        data = None
    if isinstance(data, dict):
        code = data.get("code") or data.get("error")
        message = (
            data.get("message") or data.get("description") or data.get("error_description") or ""
        )
        details = data.get("details") or []
        if isinstance(details, list):
            fields = tuple(
                str(d.get("fieldName"))
                for d in details
                if isinstance(d, dict) and d.get("fieldName")
            )
    if not message:
        message = (body or "").strip()[:200] or "no message"
    retry_after = None
    if headers is not None:
        value = headers.get("Retry-After") if hasattr(headers, "get") else None
        if value is not None:
            try:
                retry_after = max(0.0, float(value))
            except ValueError:
                retry_after = None
    return ApiError(status, code, " ".join(str(message).split()), retry_after, fields)


def _transport_error(exc: BaseException, method: str) -> TransportError:
    """What urllib3 (or the socket under it) raised, as a TransportError of one kind."""
    from urllib3 import exceptions as ux

    sent = method not in ("GET", "HEAD")  # for reads it does not matter; be safe for writes
    # urllib3 2 makes NameResolutionError and NewConnectionError kinds of ConnectTimeoutError:
    # test the narrow ones first.
    if isinstance(exc, ux.NameResolutionError):
        return TransportError("connect", "host name not found (DNS)", maybe_acted=False)
    if isinstance(exc, (ux.NewConnectionError, ConnectionRefusedError)):
        reason = str(exc).split(": ", 1)[-1]
        return TransportError("connect", f"cannot connect: {reason}", maybe_acted=False)
    if isinstance(exc, ux.ConnectTimeoutError):
        return TransportError("connect", "connection timed out", maybe_acted=False)
    if isinstance(exc, ux.SSLError):
        # It may come while reading the answer, after the server acted: stay on the safe side.
        return TransportError("tls", f"TLS error: {exc}", maybe_acted=sent)
    if isinstance(exc, (ux.ReadTimeoutError, TimeoutError)):
        return TransportError("timeout", "no answer within the read timeout", maybe_acted=sent)
    if isinstance(exc, (ux.ProtocolError, ConnectionError, ux.HTTPError, OSError)):
        return TransportError("dropped", "connection dropped before an answer", maybe_acted=sent)
    return TransportError("dropped", f"request failed: {type(exc).__name__}", maybe_acted=sent)
