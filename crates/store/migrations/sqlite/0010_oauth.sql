-- OAuth 2.0 client applications of an account (RingCentral dialect): the client secret is
-- stored as its SHA-256 only.
CREATE TABLE oauth_apps (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    client_id       TEXT NOT NULL UNIQUE,
    secret_hash     TEXT NOT NULL,
    name            TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX oauth_apps_account ON oauth_apps (account_id);

-- Issued token pairs (access + refresh), by the SHA-256 of each token. A refresh replaces
-- the row (rotation); a revocation deletes it.
CREATE TABLE oauth_tokens (
    id                  TEXT PRIMARY KEY,
    app_id              TEXT NOT NULL REFERENCES oauth_apps(id) ON DELETE CASCADE,
    account_id          TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    access_hash         TEXT NOT NULL UNIQUE,
    access_expires_at   BIGINT NOT NULL,
    refresh_hash        TEXT NOT NULL UNIQUE,
    refresh_expires_at  BIGINT NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX oauth_tokens_user ON oauth_tokens (user_id, app_id);
