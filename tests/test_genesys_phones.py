"""A user's phones as Genesys reads them back: the four shapes of the Terraform provider's
flattenUserAddresses, read from JSON contacts, from SDK Contact models, and by the client from
what a search and a GET answer."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from jobrunner.config import Settings, parse_environment
from jobrunner.genesys import GenesysClient, read_phone, work_phone

WORK = {"mediaType": "PHONE", "type": "WORK"}
MOBILE = {
    "address": "+13175550199",
    "display": "(317) 555-0199",
    "mediaType": "PHONE",
    "type": "MOBILE",
    "countryCode": "US",
}
EMAIL = {"address": "pat.home@example.com", "mediaType": "EMAIL", "type": "WORK"}

# name -> (a work phone contact as the API may give it, (number, extension) read from it)
SHAPES: dict[str, tuple[dict[str, str], tuple[str | None, str | None]]] = {
    "1: a number alone": ({"address": "+13175550142"}, ("+13175550142", None)),
    "1: a number with its display": (
        {"address": "+13175550142", "display": "(317) 555-0142"},
        ("+13175550142", None),
    ),
    "2: a pooled extension": ({"extension": "204", "display": "204"}, (None, "204")),
    "2: a pooled extension the org gave an address": (
        {"address": "+13175550100", "extension": "204", "display": "204"},
        (None, "204"),
    ),
    "2: in brackets": ({"extension": "(204)", "display": "(204)"}, (None, "204")),
    "3: the number only in display": (
        {"extension": "204", "display": "+13175550142"},
        ("+13175550142", "204"),
    ),
    "3: a formatted display": (
        {"extension": "204", "display": "+1 317-555-0142"},
        ("+13175550142", "204"),
    ),
    "3: display wins over address": (
        {"address": "+13175550199", "extension": "204", "display": "+1 (317) 555-0142"},
        ("+13175550142", "204"),
    ),
    "3: a national display in the contact's country": (
        {"extension": "204", "display": "(317) 555-0142", "countryCode": "US"},
        ("+13175550142", "204"),
    ),
    "3: a national display, no country": (
        {"extension": "204", "display": "(317) 555-0142"},
        (None, "204"),
    ),
    "3: a display that is no number": (
        {"extension": "204", "display": "front desk"},
        (None, "204"),
    ),
    "4: an extension only as display": ({"display": "204"}, (None, "204")),
    "4: in brackets": ({"display": "(204)"}, (None, "204")),
    # The provider trims brackets and nothing else: "ext 204" stays what it says.
    "4: 'ext 204'": ({"display": "ext 204"}, (None, "ext 204")),
    "as sent: number and extension, no display": (
        {"address": "+13175550142", "extension": "204"},
        ("+13175550142", "204"),
    ),
    "as sent: an extension alone": ({"extension": "204"}, (None, "204")),
    "blank fields are absent ones": (
        {"address": "", "extension": " 204 ", "display": " "},
        (None, "204"),
    ),
}

SNAKE = {"mediaType": "media_type", "countryCode": "country_code"}


def as_model(sdk: Any, contact: dict[str, str]) -> Any:
    """The SDK's Contact model for a JSON contact."""
    return sdk.model("Contact", **{SNAKE.get(k, k): v for k, v in contact.items()})


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_shape_from_json_contacts(shape: str) -> None:
    contact, read = SHAPES[shape]
    assert read_phone({**WORK, **contact}) == read
    assert work_phone([MOBILE, EMAIL, {**WORK, **contact}]) == read


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_shape_from_sdk_contact_models(sdk: Any, shape: str) -> None:
    contact, read = SHAPES[shape]
    models = [as_model(sdk, c) for c in (MOBILE, EMAIL, {**WORK, **contact})]
    assert work_phone(models) == read


@pytest.mark.parametrize(
    ("addresses", "read"),
    [
        # A mobile number beside a work extension: the work phone has no number.
        ([MOBILE, {**WORK, "display": "204"}], (None, "204")),
        ([{**WORK, "display": "204"}, MOBILE], (None, "204")),
        # A mobile number alone is no work phone; nor is an email or an SMS address.
        ([MOBILE], (None, None)),
        ([EMAIL], (None, None)),
        ([{"address": "+13175550142", "mediaType": "SMS", "type": "WORK"}], (None, None)),
        ([], (None, None)),
        (None, (None, None)),
        # Several work phones: the first.
        (
            [{**WORK, "address": "+13175550142"}, {**WORK, "address": "+13175550143"}],
            ("+13175550142", None),
        ),
    ],
)
def test_the_work_phone_among_other_contacts(
    addresses: list[dict[str, str]] | None, read: tuple[str | None, str | None]
) -> None:
    assert work_phone(addresses) == read


# -- the client reads them so ------------------------------------------------------------------

USER_ID = "6b8a5e4c-1f2d-4e3a-9b7c-0d1e2f3a4b5c"


class UserServer:
    """Genesys for one user: a token, a search that finds the user, GET /users/{id}."""

    def __init__(self, user: dict[str, Any]) -> None:
        self.user = user
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.partition("?")[0]
                if path == "/oauth/token":
                    body: Any = {"access_token": "t" * 24, "expires_in": 86400}
                elif path == "/api/v2/users/search":
                    body = {"total": 1, "pageCount": 1, "results": [outer.user]}
                elif path == f"/api/v2/users/{USER_ID}":
                    body = outer.user
                else:
                    body = None
                data = json.dumps(body).encode() if body is not None else b"{}"
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def client_for(sdk: Any) -> Iterator[Callable[[list[dict[str, str]] | None], GenesysClient]]:
    """A GenesysClient talking to a server whose one user has `addresses` (None: the user's
    JSON has no `addresses` at all)."""
    servers: list[UserServer] = []

    def make(addresses: list[dict[str, str]] | None) -> GenesysClient:
        user: dict[str, Any] = {
            "id": USER_ID,
            "name": "Pat Doe",
            "email": "pat@example.com",
            "state": "active",
            "version": 3,
        }
        if addresses is not None:
            user["addresses"] = addresses
        server = UserServer(user)
        servers.append(server)
        settings = Settings("client-id", "client-secret", parse_environment(server.url))
        client = GenesysClient(settings, pool_size=2)
        client.authenticate()
        return client

    yield make
    for server in servers:
        server.close()


@pytest.mark.parametrize("shape", [s for s in SHAPES if s[0].isdigit()])
def test_search_and_get_read_the_work_phone_in_each_shape(client_for: Any, shape: str) -> None:
    contact, (number, extension) = SHAPES[shape]
    client = client_for([MOBILE, EMAIL, {**WORK, **contact}])
    numbers = ("+13175550199", number) if number else ("+13175550199",)

    found = client.find_user_by_email("pat@example.com")
    assert found is not None
    assert (found.phone, found.extension) == (number, extension)
    assert found.phones == numbers  # every phone's number, the mobile's too

    detail = client.get_user(USER_ID)
    assert (detail.phone, detail.extension) == (number, extension)
    assert detail.phones == numbers
    assert detail.extensions == ((extension,) if extension else ())
    # The contacts stay as the API gave them: a PATCH of addresses sends them back so.
    assert detail.contacts[2] == {
        "address": None,
        "display": None,
        "extension": None,
        "countryCode": None,
        **WORK,
        **contact,
    }


def test_a_search_that_lists_no_addresses_reads_no_phone(client_for: Any) -> None:
    found = client_for(None).find_user_by_email("pat@example.com")
    assert found is not None
    assert (found.phones, found.phone, found.extension) == (None, None, None)
