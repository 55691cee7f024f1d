-- PostgreSQL twin of migrations/sqlite/0003_recordings.sql: the same tables and columns (checked by the
-- store test `migration_sets_define_the_same_schema`); change both together.
-- Call recordings: one row per recording, written when it starts (state 'recording') and
-- completed when it stops; rows left in 'recording' by a crash are repaired at start-up.
CREATE TABLE recordings (
    id TEXT COLLATE "C" PRIMARY KEY,
    account_id TEXT COLLATE "C" NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    call_id TEXT COLLATE "C" NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C" NOT NULL,            -- recording | complete | repaired
    started_at BIGINT NOT NULL,     -- unix ms
    ended_at BIGINT,
    duration_ms BIGINT,
    bytes BIGINT
);
CREATE INDEX recordings_by_call ON recordings (account_id, call_id);
CREATE INDEX recordings_by_state ON recordings (state);
