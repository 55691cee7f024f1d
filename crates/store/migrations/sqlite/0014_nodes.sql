-- Cluster liveness (issue 18, SIP front and node failure). Kept in step with
-- migrations/postgres/0014_nodes.sql.
-- Each node of a cluster writes its row every [cluster] heartbeat_secs; a survivor that finds a
-- node silent for node_dead_after_secs sets dead_since (a conditional UPDATE: exactly one
-- survivor wins) and, in the same transaction, closes that node's live calls with end cause
-- 'node_failure'. A node that starts again clears dead_since.
CREATE TABLE nodes (
    node_id     TEXT PRIMARY KEY,
    started_at  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    dead_since  BIGINT
);

-- The node that owns a live call is `live_calls.node_id`, added by 0013.
