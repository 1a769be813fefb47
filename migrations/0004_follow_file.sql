-- 0004: people this ledger created follow their row. A file ingested again with other values
-- for a person the job created updates the row and its plan, and marks it: from then on each
-- of its steps reads the user first and sends only what differs, as for people brought in
-- line with --update-existing.
-- Forward-only: never edit this file once released.

ALTER TABLE rows ADD COLUMN follows_file INTEGER NOT NULL DEFAULT 0;
