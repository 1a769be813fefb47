-- 0006: routing languages, as admins assign them beside skills. A row keeps its languages
-- cell as written, and its `wants` may be languages too (SQLite cannot widen a CHECK
-- constraint in place: the table is rebuilt, its rows kept).
-- Forward-only: never edit this file once released.

ALTER TABLE rows ADD COLUMN languages TEXT;

CREATE TABLE wants_v2 (
    row_id       INTEGER NOT NULL REFERENCES rows(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL CHECK (kind IN ('role', 'queue', 'skill', 'language')),
    position     INTEGER NOT NULL,
    name         TEXT NOT NULL,        -- as written
    name_key     TEXT NOT NULL,        -- trimmed, case-folded: how names are matched
    division     TEXT,                 -- role: the division as written (NULL: the row's own)
    proficiency  REAL,                 -- skill, language: 0 to 5
    PRIMARY KEY (row_id, kind, position)
);
INSERT INTO wants_v2 SELECT row_id, kind, position, name, name_key, division, proficiency
FROM wants;
DROP TABLE wants;
ALTER TABLE wants_v2 RENAME TO wants;
CREATE INDEX wants_name ON wants(kind, name_key);
