-- PostgreSQL twin of migrations/sqlite/0014_nodes.sql (checked by the store test
-- `migration_sets_define_the_same_schema`); change both together.
-- Cluster liveness (issue 18, SIP front and node failure).
-- Each node of a cluster writes its row every [cluster] heartbeat_secs; a survivor that finds a
-- node silent for node_dead_after_secs sets dead_since (a conditional UPDATE: exactly one
-- survivor wins) and, in the same transaction, closes that node's live calls with end cause
-- 'node_failure'. A node that starts again clears dead_since.
CREATE TABLE nodes (
    node_id     TEXT COLLATE "C" PRIMARY KEY,
    started_at  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    dead_since  BIGINT
);

-- The node that owns a live call is `live_calls.node_id`, added by 0013.
