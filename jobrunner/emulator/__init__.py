"""A local stand-in for the Genesys Cloud API (users, the org and onboarding), faithful enough
for the official SDK.

Modules:

    errors.py     ApiError and the Genesys error body
    org.py        roles, queues, skills, locations: the org file, name matching, listings
    directory.py  users and divisions, and each user's grants, skills, queues, manager and
                  locations: validation, search, conflicts, persistence helpers
    access.py     OAuth client-credentials tokens and the per-token sliding-window rate limit
    server.py     EmulatorConfig, Emulator: the HTTP server, routing, permissions, faults,
                  statistics
    command.py    `jobrunner emulator`

This package's __init__ stays empty on purpose: the CLI imports `command` at start-up and
must not pay for the server.
"""
