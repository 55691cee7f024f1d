-- PostgreSQL twin of migrations/sqlite/0013_node_ids.sql: the same tables and columns (checked by
-- the store test `migration_sets_define_the_same_schema`); change both together.
-- The cluster node that owns each call (`[cluster] node_id`): a live call's row and a call's
-- record say which node it ran on. The crash recovery at start closes only its own node's live
-- calls (and rows from before nodes were named, node_id NULL); API commands for another node's
-- call are forwarded to that node (docs/architecture.md "The bus").
ALTER TABLE live_calls ADD COLUMN node_id TEXT COLLATE "C";
ALTER TABLE call_records ADD COLUMN node_id TEXT COLLATE "C";
CREATE INDEX live_calls_node ON live_calls (node_id);
