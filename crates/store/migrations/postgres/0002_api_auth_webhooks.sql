-- PostgreSQL twin of migrations/sqlite/0002_api_auth_webhooks.sql: the same tables and columns (checked by the
-- store test `migration_sets_define_the_same_schema`); change both together.
-- Live call control (issue 3): sipgate push webhooks per user, server secrets (token signing
-- keys that survive restarts), personal access tokens (sipgate "tokenId:token" Basic auth).
-- Portable SQL (the SQLite set's statements).

ALTER TABLE users ADD COLUMN webhook_url TEXT COLLATE "C";   -- sipgate push API: where newCall is POSTed

CREATE TABLE server_secrets (
    name        TEXT COLLATE "C" PRIMARY KEY,          -- e.g. 'sipgate_jwt_hs256'
    value       TEXT COLLATE "C" NOT NULL,             -- random, lowercase hex
    created_at  BIGINT NOT NULL
);

CREATE TABLE personal_access_tokens (
    id          TEXT COLLATE "C" PRIMARY KEY,          -- the public token id, 'token-' + 6 alphanumerics
    account_id  TEXT COLLATE "C" NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id     TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name        TEXT COLLATE "C" NOT NULL,
    token_hash  TEXT COLLATE "C" NOT NULL UNIQUE,      -- SHA-256 of the secret token (a UUIDv4), lowercase hex
    created_at  BIGINT NOT NULL
);
CREATE INDEX personal_access_tokens_user ON personal_access_tokens (user_id);
