-- PostgreSQL twin of migrations/sqlite/0007_password_changed_at.sql: the same tables and columns (checked by the
-- store test `migration_sets_define_the_same_schema`); change both together.
-- When a user's password was last set (unix seconds): access tokens issued before it are
-- refused. 0 for users that exist before this upgrade, so their tokens stay valid.
ALTER TABLE users ADD COLUMN password_changed_at BIGINT NOT NULL DEFAULT 0;
