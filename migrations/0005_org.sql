-- 0005: a ledger knows which org it belongs to. The first command that reaches an org records
-- its id, name and region; `check`, `run` and `rollback` against another org refuse before
-- any write.
-- Forward-only: never edit this file once released.

CREATE TABLE org (
    id        INTEGER PRIMARY KEY CHECK (id = 1),   -- one org per ledger
    org_id    TEXT NOT NULL,
    name      TEXT,
    region    TEXT NOT NULL,                       -- the API's base URL
    bound_at  TEXT NOT NULL
);
