-- The ledger: one row per CSV record, with everything the runner needs to resume.
-- Forward-only: never edit this file once released; add 0002_*.sql instead.

CREATE TABLE sources (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,            -- file name as given to `ingest`
    sha256       TEXT NOT NULL,            -- of the file's bytes
    ingested_at  TEXT NOT NULL,            -- ISO 8601 UTC
    rows_read    INTEGER NOT NULL DEFAULT 0,
    rows_added   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE rows (
    id               INTEGER PRIMARY KEY,
    source_id        INTEGER NOT NULL REFERENCES sources(id),
    line             INTEGER NOT NULL,     -- physical line where the record starts (header = 1)
    first_name       TEXT NOT NULL DEFAULT '',
    last_name        TEXT NOT NULL DEFAULT '',
    email            TEXT NOT NULL DEFAULT '',   -- as written in the file (trimmed)
    email_norm       TEXT NOT NULL DEFAULT '',   -- lower-cased, the identity of a person
    phone_number     TEXT,                 -- E.164 once valid
    division_id      TEXT,
    title            TEXT,
    department       TEXT,
    status           TEXT NOT NULL
        CHECK (status IN ('pending', 'in_progress', 'created', 'exists', 'failed', 'invalid')),
    attempts         INTEGER NOT NULL DEFAULT 0,    -- create requests sent (429s excluded)
    next_attempt_at  REAL NOT NULL DEFAULT 0,       -- unix time; due when <= now
    in_doubt         INTEGER NOT NULL DEFAULT 0,    -- 1: a create was sent, never answered;
                                                    -- 2: and a later create got 409
    claim_owner      TEXT,                 -- runner id holding the row while in_progress
    lease_expires_at REAL,                 -- unix time after which a dead owner's claim is void
    error_code       TEXT,
    error_message    TEXT,
    user_id          TEXT,                 -- the Genesys user id (created or exists)
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

-- One live row per person: a valid email appears at most once outside `invalid`.
CREATE UNIQUE INDEX rows_email_live ON rows(email_norm) WHERE status != 'invalid';
CREATE INDEX rows_email_norm ON rows(email_norm);
CREATE INDEX rows_due ON rows(status, next_attempt_at);
CREATE INDEX rows_source_line ON rows(source_id, line);

-- Who is running on this ledger (one row per live runner; see runner.py).
CREATE TABLE runners (
    id          TEXT PRIMARY KEY,
    pid         INTEGER NOT NULL,
    host        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    heartbeat_at REAL NOT NULL
);
