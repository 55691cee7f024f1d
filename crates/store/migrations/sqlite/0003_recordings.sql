-- Call recordings: one row per recording, written when it starts (state 'recording') and
-- completed when it stops; rows left in 'recording' by a crash are repaired at start-up.
CREATE TABLE recordings (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    call_id TEXT NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL,            -- recording | complete | repaired
    started_at INTEGER NOT NULL,    -- unix ms
    ended_at INTEGER,
    duration_ms INTEGER,
    bytes INTEGER
);
CREATE INDEX recordings_by_call ON recordings (account_id, call_id);
CREATE INDEX recordings_by_state ON recordings (state);
