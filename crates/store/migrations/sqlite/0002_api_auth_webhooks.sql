-- Live call control (issue 3): sipgate push webhooks per user, server secrets (token signing
-- keys that survive restarts), personal access tokens (sipgate "tokenId:token" Basic auth).
-- Portable SQL (SQLite now, Postgres later).

ALTER TABLE users ADD COLUMN webhook_url TEXT;   -- sipgate push API: where newCall is POSTed

CREATE TABLE server_secrets (
    name        TEXT PRIMARY KEY,          -- e.g. 'sipgate_jwt_hs256'
    value       TEXT NOT NULL,             -- random, lowercase hex
    created_at  BIGINT NOT NULL
);

CREATE TABLE personal_access_tokens (
    id          TEXT PRIMARY KEY,          -- the public token id, 'token-' + 6 alphanumerics
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,      -- SHA-256 of the secret token (a UUIDv4), lowercase hex
    created_at  BIGINT NOT NULL
);
CREATE INDEX personal_access_tokens_user ON personal_access_tokens (user_id);
