-- Calls in progress, so a call cut by a crash still gets its call record at the next start
-- (end cause 'crash'). A row is written when a call starts, its answer time when answered, and
-- removed in the transaction that writes the call's record.
CREATE TABLE live_calls (
    id           TEXT PRIMARY KEY,
    account_id   TEXT,
    from_uri     TEXT NOT NULL,
    to_uri       TEXT NOT NULL,
    direction    TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    answered_at  BIGINT
);

-- When this server was last seen alive (unix ms, written every few seconds): a crashed call
-- ended no later than that.
CREATE TABLE server_heartbeat (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    at  BIGINT NOT NULL
);
