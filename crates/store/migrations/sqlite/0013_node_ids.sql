-- The cluster node that owns each call (`[cluster] node_id`): a live call's row and a call's
-- record say which node it ran on. The crash recovery at start closes only its own node's live
-- calls (and rows from before nodes were named, node_id NULL); API commands for another node's
-- call are forwarded to that node (docs/architecture.md "The bus").
ALTER TABLE live_calls ADD COLUMN node_id TEXT;
ALTER TABLE call_records ADD COLUMN node_id TEXT;
CREATE INDEX live_calls_node ON live_calls (node_id);
