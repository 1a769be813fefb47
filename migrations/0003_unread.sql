-- 0003: what was written and never read goes. Claims are voided by the run lock and the
-- recovery at the start of every run, not by a lease; the lock file names who holds a
-- ledger (the `runners` table did not); names are looked up afresh by every `check` and
-- `run` (the `names` cache was never read back).
-- Forward-only: never edit this file once released.

ALTER TABLE rows DROP COLUMN lease_expires_at;
ALTER TABLE steps DROP COLUMN lease_expires_at;
DROP TABLE runners;
DROP TABLE names;
