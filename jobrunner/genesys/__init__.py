"""Everything jobrunner says to Genesys Cloud: the only package that imports the SDK.

    errors.py     CallError, ApiError, TransportError; the SDK's and urllib3's errors as ours
    models.py     what is sent and read back: NewUser, Created, FoundUser, UserDetail, Named
    contacts.py   a user's contacts: their fields, the phones in them as Genesys reads them
    transport.py  our urllib3 transport under the SDK: no retries, timeouts, http.request logs
    token.py      the token's life: fetch, renew before expiry, the refusal rules
    client.py     GenesysClient: the calls

Importing this package does not import the SDK; the first call does.
"""

from jobrunner.genesys.client import LISTINGS, PAGE_SIZE, GenesysClient, _found, _Sdk, _timestamp
from jobrunner.genesys.contacts import _CONTACT_FIELDS, digits_of, read_phone, work_phone
from jobrunner.genesys.errors import (
    ApiError,
    CallError,
    TransportError,
    _api_error,
    _transport_error,
)
from jobrunner.genesys.models import Created, FoundUser, Named, NewUser, UserDetail
from jobrunner.genesys.token import (
    REFUSAL_TRIES,
    REFUSAL_WAIT_S,
    RENEW_BEFORE_S,
    RENEW_RETRY_S,
    SEND_SLACK_S,
    TOKEN_TRIES,
    TokenKeeper,
    _fresh_token_refused,
    _LoginUnavailable,
)
from jobrunner.genesys.transport import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    TOKEN_PATH,
    Decide,
    _make_transport,
    _Response,
    _retry_decision,
    _route,
)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "LISTINGS",
    "PAGE_SIZE",
    "READ_TIMEOUT_S",
    "REFUSAL_TRIES",
    "REFUSAL_WAIT_S",
    "RENEW_BEFORE_S",
    "RENEW_RETRY_S",
    "SEND_SLACK_S",
    "TOKEN_PATH",
    "TOKEN_TRIES",
    "ApiError",
    "CallError",
    "Created",
    "Decide",
    "FoundUser",
    "GenesysClient",
    "Named",
    "NewUser",
    "TokenKeeper",
    "TransportError",
    "UserDetail",
    "digits_of",
    "read_phone",
    "work_phone",
    # Private, re-exported for the code and tests that import them from here.
    "_CONTACT_FIELDS",
    "_LoginUnavailable",
    "_Response",
    "_Sdk",
    "_api_error",
    "_found",
    "_fresh_token_refused",
    "_make_transport",
    "_retry_decision",
    "_route",
    "_timestamp",
    "_transport_error",
]
