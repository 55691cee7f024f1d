-- When a user's password was last set (unix seconds): access tokens issued before it are
-- refused. 0 for users that exist before this upgrade, so their tokens stay valid.
ALTER TABLE users ADD COLUMN password_changed_at BIGINT NOT NULL DEFAULT 0;
