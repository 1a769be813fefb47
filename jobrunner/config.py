"""Settings for talking to Genesys Cloud: environment variables, or a .env file in the cwd.

The real environment wins over .env. The client secret is kept out of every repr and message.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from jobrunner.errors import ConfigError

DEFAULT_ENVIRONMENT = "mypurecloud.com"
_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


@dataclass(frozen=True)
class Endpoint:
    """Where the API and the login service are."""

    api_url: str  # e.g. https://api.mypurecloud.com
    login_url: str  # e.g. https://login.mypurecloud.com
    gateway: tuple[str, str, int] | None = None  # (host, protocol, port) for one-host base URLs

    @property
    def display(self) -> str:
        return self.api_url


@dataclass(frozen=True)
class Settings:
    client_id: str
    client_secret: str = field(repr=False)
    endpoint: Endpoint


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_environment(value: str) -> Endpoint:
    """A region domain (mypurecloud.ie, usw2.pure.cloud, ...) or a base URL.

    A base URL serves both /oauth/token and /api/v2 (the bundled emulator, a proxy).
    Plain http is refused unless the host is loopback: credentials would cross the network
    in clear text.
    """
    raw = value.strip()
    if not raw:
        raw = DEFAULT_ENVIRONMENT
    if "://" in raw:
        try:
            parts = urlsplit(raw)
            host = parts.hostname or ""
        except ValueError as exc:
            raise ConfigError(
                f"GENESYS_CLOUD_ENVIRONMENT={value!r} is not a valid URL ({exc})"
            ) from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not host:
            raise ConfigError(
                f"GENESYS_CLOUD_ENVIRONMENT={value!r} is not a region domain or an http(s) URL"
            )
        if scheme == "http" and not _is_loopback(host):
            raise ConfigError(
                f"GENESYS_CLOUD_ENVIRONMENT={value!r}: plain http is allowed only to a loopback "
                "host (127.0.0.1, localhost, ::1); use https or the region domain"
            )
        if parts.path not in ("", "/") or parts.query:
            raise ConfigError(
                f"GENESYS_CLOUD_ENVIRONMENT={value!r}: give only scheme, host and port "
                "(the URL must serve /oauth/token and /api/v2 itself)"
            )
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise ConfigError(f"GENESYS_CLOUD_ENVIRONMENT={value!r}: bad port") from None
        netloc = f"[{host}]" if ":" in host else host
        base = f"{scheme}://{netloc}:{port}"
        return Endpoint(api_url=base, login_url=base, gateway=(netloc, scheme, port))
    domain = raw.lower().rstrip("/")
    for prefix in ("api.", "login.", "apps."):
        if domain.startswith(prefix):
            domain = domain[len(prefix) :]
    if not _DOMAIN.match(domain):
        raise ConfigError(
            f"GENESYS_CLOUD_ENVIRONMENT={value!r} is not a region domain such as "
            "mypurecloud.com, mypurecloud.ie or usw2.pure.cloud"
        )
    return Endpoint(api_url=f"https://api.{domain}", login_url=f"https://login.{domain}")


def load_settings(env_file: Path | None = None) -> Settings:
    """Read the three GENESYS_CLOUD_* settings (environment first, then ./.env)."""
    from dotenv import dotenv_values

    path = env_file if env_file is not None else Path.cwd() / ".env"
    file_values = {}
    if path.is_file():
        try:
            file_values = {k: v for k, v in dotenv_values(path).items() if v is not None}
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None

    def get(name: str) -> str:
        return (os.environ.get(name) or file_values.get(name) or "").strip()

    missing = [n for n in ("GENESYS_CLOUD_CLIENT_ID", "GENESYS_CLOUD_CLIENT_SECRET") if not get(n)]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} not set: put them in the environment or in a .env file "
            "(see .env.example)"
        )
    for name in ("GENESYS_CLOUD_CLIENT_ID", "GENESYS_CLOUD_CLIENT_SECRET"):
        if not get(name).isascii():
            raise ConfigError(
                f"{name} has characters that are not ASCII: OAuth client ids and secrets never "
                "do, so it was probably pasted wrong"
            )
    endpoint = parse_environment(get("GENESYS_CLOUD_ENVIRONMENT") or DEFAULT_ENVIRONMENT)
    return Settings(get("GENESYS_CLOUD_CLIENT_ID"), get("GENESYS_CLOUD_CLIENT_SECRET"), endpoint)
