-- PostgreSQL twin of migrations/sqlite/0009_live_calls.sql: the same tables and columns (checked by the
-- store test `migration_sets_define_the_same_schema`); change both together.
-- Calls in progress, so a call cut by a crash still gets its call record at the next start
-- (end cause 'crash'). A row is written when a call starts, its answer time when answered, and
-- removed in the transaction that writes the call's record.
CREATE TABLE live_calls (
    id           TEXT COLLATE "C" PRIMARY KEY,
    account_id   TEXT COLLATE "C",
    from_uri     TEXT COLLATE "C" NOT NULL,
    to_uri       TEXT COLLATE "C" NOT NULL,
    direction    TEXT COLLATE "C" NOT NULL,
    started_at   BIGINT NOT NULL,
    answered_at  BIGINT
);

-- When this server was last seen alive (unix ms, written every few seconds): a crashed call
-- ended no later than that.
CREATE TABLE server_heartbeat (
    id  BIGINT PRIMARY KEY CHECK (id = 1),
    at  BIGINT NOT NULL
);
