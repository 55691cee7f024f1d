-- PostgreSQL twin of migrations/sqlite/0004_provisioning_generation.sql: the same tables and columns (checked by the
-- store test `migration_sets_define_the_same_schema`); change both together.
-- A counter bumped, in the same transaction, by every write to the tables a running server
-- keeps in its in-memory read cache (accounts, users, numbers, trunks). The server drops the
-- cache when the counter moves, so changes made by another process (the `hookflash` CLI on the
-- same database) are picked up.
-- Portable SQL (the SQLite set's statements).

CREATE TABLE provisioning_generation (
    id          BIGINT PRIMARY KEY,        -- always 1: a single row
    generation  BIGINT NOT NULL
);
INSERT INTO provisioning_generation (id, generation) VALUES (1, 0);
