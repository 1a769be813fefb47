"""A local stand-in for the Genesys Cloud API (users, the org and onboarding), faithful enough
for the official SDK.

Modules:

    config.py      EmulatorConfig: every option, once (command.py builds the CLI from it)
    errors.py      ApiError and the Genesys error body
    validation.py  field checks: strings, enums, emails, contacts
    org.py         roles, queues, skills, languages, locations: the org file, name matching
    store.py       the org's shared state under one lock; divisions; the org's listings
    users.py       users: create, get, patch, restore, delete, existing users, locations,
                   phones as Genesys reads them back
    authorization.py  role grants (one subject, or one role for many), division moves
    routing.py     routing skills and languages, queue members
    search.py      user search and its index lag
    state.py       the state file, seed files, the onboarding summary of the stats
    directory.py   Directory: users, authorization, routing, search and state together
    access.py      OAuth client-credentials tokens and the per-token rate limit
    routes.py      the /api/v2 routes: permission, request parsing, the Directory call,
                   the dialect options; the caller's org and token
    stats.py       counters for GET /emulator/stats
    server.py      Emulator: the HTTP server, the request pipeline, faults, the state file
    command.py     `jobrunner emulator`

This package's __init__ stays empty on purpose: the CLI imports `command` at start-up and
must not pay for the server.
"""
