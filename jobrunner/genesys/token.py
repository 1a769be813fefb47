"""The life of the client-credentials token: fetch it, renew it before it expires, and the
rules for refusals.

The token is renewed before it expires: the first call that finds less than
min(RENEW_BEFORE_S, a quarter of its lifetime) left fetches a new one while the others go on
with the old one, still valid. A 401 (revocation) gets one new token for all threads. A refusal
of credentials that have just worked (a 401 for a token nobody has used yet, or the login
service refusing after it gave a token) is tried again after a short wait, a few times, before
it is a ConfigError. No error here carries the secret or a token.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from typing import Any

from jobrunner.config import Settings
from jobrunner.errors import ConfigError
from jobrunner.genesys.errors import ApiError, TransportError, _api_error
from jobrunner.log import get_logger

log = get_logger("jobrunner.genesys")

TOKEN_TRIES = 3  # token requests on 5xx, 429 and network errors
RENEW_BEFORE_S = 60.0  # renew when less than this (or a quarter of the lifetime) is left
SEND_SLACK_S = 5.0  # with less left than this (or a tenth of it), wait for the new token
RENEW_RETRY_S = 5.0  # a renewal the login service failed is tried again this much later
REFUSAL_TRIES = 3  # refusals of credentials that just worked, tried again before giving up
REFUSAL_WAIT_S = 0.5  # ... after this wait, doubling each time


class _LoginUnavailable(ConfigError):
    """No token, for a reason that may pass: the login service failed, limited or vanished."""


def _fresh_token_refused(err: ApiError) -> ConfigError:
    return ConfigError(f"the API refused a fresh token ({err.code}): {err.message}")


class TokenKeeper:
    """One token for every worker thread of a GenesysClient.

    `api()` gives the wired SDK (its ApiClient, our transport, its ApiException class); it is
    called only when a token is needed, so nothing here imports the SDK. `clock` (monotonic
    seconds) and `sleep` are injectable.
    """

    def __init__(
        self,
        settings: Settings,
        api: Callable[[], Any],
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self.settings = settings
        self._sdk = api
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()  # held while a token is fetched
        self.generation = 0  # how many tokens we got
        self._proven_generation = 0  # the newest token a call succeeded with
        self._fresh_refusals = 0  # new tokens refused in a row before any call worked
        self.tokens_fetched = 0  # token requests sent
        self.expires_at: float | None = None  # clock() time; None: no expires_in given
        self.renew_at = math.inf  # clock() time from which a call renews first
        self._lifetime = math.inf
        self._refusal: ConfigError | None = None
        self.on_new_token: Any = None  # called after each new token (the pacer's window)

    def authenticate(self) -> None:
        """Fetch a client-credentials token. Every failure is a ConfigError.

        A 5xx, 429 or network error from the login service is tried a few times first.
        """
        with self._lock:
            self._fetch()

    def _fetch(self) -> None:
        """One token request (a few on passing failures); the caller holds the lock.

        The SDK's own request sets the token on the ApiClient; its lifetime (`expires_in`,
        which the SDK drops) comes from the answer our transport kept.
        """
        sdk = self._sdk()
        where = self.settings.endpoint.login_url
        failures = refusals = 0
        while True:
            sent_at = self._clock()
            sdk.transport.take_token_answer()  # forget any stale one
            try:
                self.tokens_fetched += 1
                sdk.client.get_client_credentials_token(
                    self.settings.client_id, self.settings.client_secret
                )
                answer = sdk.transport.take_token_answer()
                break
            except sdk.api_exception as exc:
                err = _api_error(exc.status or 0, exc.body, exc.headers)
                if err.retryable and failures < TOKEN_TRIES - 1:
                    failures += 1
                    self._sleep(min(err.retry_after or 2.0**failures, 30.0))
                    continue
                if err.retryable:
                    raise _LoginUnavailable(f"cannot get a token from {where}: {err}") from None
                refused = err.status in (400, 401)
                if refused and self.generation and refusals < REFUSAL_TRIES:
                    # These credentials got a token before: a refusal may pass.
                    refusals += 1
                    wait = REFUSAL_WAIT_S * 2 ** (refusals - 1)
                    log.warning("token.refused", code=err.code, by="login", retry_in_s=wait)
                    self._sleep(wait)
                    continue
                if refused and err.code in ("invalid_client", "unauthorized_client"):
                    raise ConfigError(
                        f"{where} refused the OAuth client ({err.code}): check "
                        "GENESYS_CLOUD_CLIENT_ID and GENESYS_CLOUD_CLIENT_SECRET, and that the "
                        "client's grant type is Client Credentials"
                    ) from None
                raise ConfigError(f"cannot get a token from {where}: {err}") from None
            except TransportError as exc:
                if exc.kind != "connect" and failures < TOKEN_TRIES - 1:
                    failures += 1
                    self._sleep(2.0**failures)
                    continue
                raise _LoginUnavailable(
                    f"cannot reach {where}: {exc.message} (check GENESYS_CLOUD_ENVIRONMENT)"
                ) from None
            except (ValueError, KeyError) as exc:
                raise ConfigError(
                    f"{where} answered the token request with no token ({type(exc).__name__})"
                ) from None
        self._set_lifetime(sent_at, answer)
        self.generation += 1
        if self.on_new_token is not None:
            self.on_new_token()

    def _set_lifetime(self, sent_at: float, answer: str | None) -> None:
        """Expiry and renewal time of the new token, counted from when it was asked for."""
        try:
            lifetime = float(json.loads(answer or "")["expires_in"])
        except (ValueError, KeyError, TypeError):
            lifetime = math.nan
        if not (math.isfinite(lifetime) and lifetime > 0):
            self.expires_at, self.renew_at = None, math.inf
            self._lifetime = math.inf
            return
        self._lifetime = lifetime
        self.expires_at = sent_at + lifetime
        self.renew_at = self.expires_at - min(RENEW_BEFORE_S, lifetime / 4)

    def _usable(self) -> bool:
        """Can a request still go out with the current token (not about to expire)?"""
        if self.expires_at is None:
            return True
        slack = min(SEND_SLACK_S, self._lifetime / 10)
        return self._clock() < self.expires_at - slack

    def before_call(self) -> int:
        """Before a request: renew a token near its end, one request for all threads. The
        generation of the token the request goes out with.

        While one thread renews, the others go on with the current token if it is still
        usable, or wait for the new one.
        """
        self._renew_if_due()
        return self.generation

    def _renew_if_due(self) -> None:
        if self._clock() < self.renew_at and self._refusal is None:
            return
        if not self._lock.acquire(blocking=not self._usable()):
            return  # another thread is renewing; ours is still good
        try:
            if self._refusal is not None:
                raise self._refusal
            if self._clock() < self.renew_at:
                return  # renewed while we waited
            try:
                self._fetch()
            except _LoginUnavailable as exc:
                if not self._usable():
                    self._refusal = exc
                    raise
                # The current token still works: try again a little later.
                left = (self.expires_at or 0.0) - self._clock()
                self.renew_at = self._clock() + min(RENEW_RETRY_S, left / 2)
                log.warning("token.renew_later", error=str(exc), seconds_left=round(left, 1))
            except ConfigError as refusal:
                self._refusal = refusal
                raise
        finally:
            self._lock.release()

    def worked(self, generation: int) -> None:
        """A call succeeded with the token of `generation`: it is proven good."""
        if generation > self._proven_generation:
            self._proven_generation = generation
            self._fresh_refusals = 0

    def refused(self, generation: int, err: ApiError, times: int) -> None:
        """The API answered 401 (`err`) to a call made with the token of `generation`, for the
        `times`th time in this call: get a new token, or raise the ConfigError that stops the
        run.

        One new token for all the threads that saw the old one refused: the lock is held for
        the whole fetch, so the others wait and then use the new token; if the login service
        refused it, they all get that refusal without asking again. A token refused before any
        call succeeded with it is replaced after a short wait, a few times (revocations take a
        moment to settle), then the run stops.
        """
        if times > REFUSAL_TRIES + 1:
            raise _fresh_token_refused(err)
        with self._lock:
            if self._refusal is not None:
                raise self._refusal
            if self.generation != generation:
                return  # another thread has a new token already
            if self._proven_generation != generation:
                self._fresh_refusals += 1
                if self._fresh_refusals > REFUSAL_TRIES:
                    self._refusal = _fresh_token_refused(err)
                    raise self._refusal
                wait = REFUSAL_WAIT_S * 2 ** (self._fresh_refusals - 1)
                log.warning("token.refused", code=err.code, by="api", retry_in_s=wait)
                self._sleep(wait)
            try:
                self._fetch()
            except ConfigError as refusal:
                self._refusal = refusal
                raise
