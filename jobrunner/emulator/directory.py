"""The Directory: users and divisions as the Genesys Cloud users API keeps them, and what
onboarding gives a user (role grants, routing skills and languages, queue memberships, manager,
locations).

It validates requests the way the API does (400 naming the field, 409 on a taken email, 404 on
an unknown id, 409 on a stale version), soft-deletes and restores, searches, and lists
divisions, roles, queues, skills and locations. It knows nothing about HTTP and is safe to call
from many threads. Its parts, each in its own module:

    store.py       the shared state under one lock; divisions; the org's listings
    users.py       create, get, patch, restore, delete; existing users; a user's locations
    authorization.py  role grants (one subject or one role for many), division moves
    routing.py     skills, languages, queue members
    search.py      user search
    state.py       the stats' onboarding summary, the state file, seed files

The names below stay importable from here.
"""

from __future__ import annotations

from jobrunner.emulator.authorization import Authorization
from jobrunner.emulator.routing import Routing
from jobrunner.emulator.search import Search
from jobrunner.emulator.state import Snapshots, load_state, read_existing_users, save_state
from jobrunner.emulator.users import Users
from jobrunner.emulator.validation import is_email, now_iso, validate_addresses, validate_email

__all__ = [
    "Directory",
    "is_email",
    "load_state",
    "now_iso",
    "read_existing_users",
    "save_state",
    "validate_addresses",
    "validate_email",
]


class Directory(Users, Authorization, Routing, Search, Snapshots):
    """The org's users, divisions and the rest of the org (roles, queues, skills, languages,
    locations).

    `divisions` maps extra division names to ids; the Home division is always there. More
    come from an org file through load_org().
    """
