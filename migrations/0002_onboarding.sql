-- 0002: onboarding. A row now carries what the admin UI's import template carries (full
-- name, extension, division by name or id, manager, location, roles, queues, skills), every
-- requested assignment is kept (`wants`), and each step after the create has its own state
-- (`steps`). Names resolved against the org are cached (`names`).
-- Forward-only: never edit this file once released.

-- `rows` is rebuilt: SQLite cannot widen a CHECK constraint in place.
CREATE TABLE rows_v2 (
    id               INTEGER PRIMARY KEY,
    source_id        INTEGER NOT NULL REFERENCES sources(id),
    line             INTEGER NOT NULL,     -- physical line where the record starts (header = 1)
    name             TEXT NOT NULL DEFAULT '',   -- full name, what the create sends
    first_name       TEXT NOT NULL DEFAULT '',
    last_name        TEXT NOT NULL DEFAULT '',
    email            TEXT NOT NULL DEFAULT '',   -- as written in the file (trimmed)
    email_norm       TEXT NOT NULL DEFAULT '',   -- lower-cased, the identity of a person
    phone_number     TEXT,                 -- E.164 once valid
    extension        TEXT,                 -- digits
    division         TEXT,                 -- as written: a division name or id; NULL: Home
    division_id      TEXT,                 -- the id: as written, or resolved before the create
    title            TEXT,
    department       TEXT,
    email_manager    TEXT,                 -- the manager's email, as written
    location_work    TEXT,                 -- a location name, as written
    roles_divisions  TEXT,                 -- the list cells as written (parsed into `wants`)
    queues           TEXT,
    skills           TEXT,
    status           TEXT NOT NULL
        CHECK (status IN ('pending', 'in_progress', 'created', 'exists', 'failed', 'invalid',
                          'rolled_back')),
    attempts         INTEGER NOT NULL DEFAULT 0,    -- create requests sent (429s excluded)
    next_attempt_at  REAL NOT NULL DEFAULT 0,       -- unix time; due when <= now
    in_doubt         INTEGER NOT NULL DEFAULT 0,    -- 1: a create was sent, never answered;
                                                    -- 2: and a later create got 409
    first_sent_at    REAL,                 -- unix time the first create was sent: a user found
                                           -- by a look-up but modified before it is not ours
    claim_owner      TEXT,                 -- runner id holding the row while in_progress
    lease_expires_at REAL,                 -- unix time after which a dead owner's claim is void
    error_code       TEXT,
    error_message    TEXT,
    user_id          TEXT,                 -- the Genesys user id (created or exists)
    user_version     INTEGER,              -- the user's version after our last write
    settled_by       TEXT,                 -- how the user id became known: create, lookup
                                           -- (an unanswered create found by search), conflict
                                           -- (409: there before), restore; NULL: created by
                                           -- an earlier jobrunner, which did not record it
    settled_at       REAL,                 -- unix time the user id became known
    user_state       TEXT,                 -- exists: the user's state (active, inactive, deleted)
    rank             INTEGER NOT NULL DEFAULT 0,    -- create order: managers before reports
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

INSERT INTO rows_v2 (
    id, source_id, line, name, first_name, last_name, email, email_norm, phone_number,
    division, division_id, title, department, status, attempts, next_attempt_at, in_doubt,
    claim_owner, lease_expires_at, error_code, error_message, user_id, settled_by,
    created_at, updated_at
)
SELECT
    id, source_id, line, trim(first_name || ' ' || last_name), first_name, last_name, email,
    email_norm, phone_number, division_id, division_id, title, department, status, attempts,
    next_attempt_at, in_doubt, claim_owner, lease_expires_at, error_code, error_message,
    user_id,
    -- An earlier jobrunner did not record whether a created row was settled by a look-up
    -- (a person who was there before can look the same): NULL, which rollback leaves out
    -- unless asked.
    CASE status WHEN 'exists' THEN 'conflict' END,
    created_at, updated_at
FROM rows;

DROP TABLE rows;
ALTER TABLE rows_v2 RENAME TO rows;

-- One live row per person: a valid email appears at most once outside `invalid`.
CREATE UNIQUE INDEX rows_email_live ON rows(email_norm) WHERE status != 'invalid';
CREATE INDEX rows_email_norm ON rows(email_norm);
CREATE INDEX rows_due ON rows(status, rank, next_attempt_at);
CREATE INDEX rows_source_line ON rows(source_id, line);

-- Every assignment a row asks for, in the order the file gives them.
CREATE TABLE wants (
    row_id       INTEGER NOT NULL REFERENCES rows(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL CHECK (kind IN ('role', 'queue', 'skill')),
    position     INTEGER NOT NULL,
    name         TEXT NOT NULL,        -- as written
    name_key     TEXT NOT NULL,        -- trimmed, case-folded: how names are matched
    division     TEXT,                 -- role: the division as written (NULL: the row's own)
    proficiency  REAL,                 -- skill: 0 to 5
    PRIMARY KEY (row_id, kind, position)
);
CREATE INDEX wants_name ON wants(kind, name_key);

-- The work after the create, one row per step of a person (queues: one per queue).
-- waiting: the user does not exist yet; pending: due at next_attempt_at; in_progress:
-- claimed; done; failed (attempts used up, or refused); skipped (the person was there
-- before the job).
CREATE TABLE steps (
    row_id           INTEGER NOT NULL REFERENCES rows(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,        -- roles, skills, queue, profile
    target           TEXT NOT NULL DEFAULT '',   -- queue: the queue's name key
    status           TEXT NOT NULL
        CHECK (status IN ('waiting', 'pending', 'in_progress', 'done', 'failed', 'skipped')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL DEFAULT 0,
    claim_owner      TEXT,
    lease_expires_at REAL,
    error_code       TEXT,
    error_message    TEXT,
    detail           TEXT,                 -- what the step changed (JSON), when it says
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (row_id, kind, target)
);
CREATE INDEX steps_due ON steps(status, kind, next_attempt_at);
CREATE INDEX steps_queue ON steps(kind, target, status) WHERE kind = 'queue';

-- Names resolved against the org: one row per name a file uses, refreshed by each run.
CREATE TABLE names (
    kind         TEXT NOT NULL,        -- division, role, queue, skill, location, manager
    name_key     TEXT NOT NULL,
    name         TEXT NOT NULL,        -- as the org spells it (or as written, if unknown)
    object_id    TEXT,                 -- NULL: unknown or ambiguous
    problem      TEXT,                 -- why there is no id
    resolved_at  TEXT NOT NULL,
    PRIMARY KEY (kind, name_key)
);
