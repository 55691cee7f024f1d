-- PostgreSQL twin of migrations/sqlite/0010_oauth.sql: the same tables and columns (checked by the
-- store test `migration_sets_define_the_same_schema`); change both together.
-- OAuth 2.0 client applications of an account (RingCentral dialect): the client secret is
-- stored as its SHA-256 only.
CREATE TABLE oauth_apps (
    id              TEXT COLLATE "C" PRIMARY KEY,
    account_id      TEXT COLLATE "C" NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    client_id       TEXT COLLATE "C" NOT NULL UNIQUE,
    secret_hash     TEXT COLLATE "C" NOT NULL,
    name            TEXT COLLATE "C" NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX oauth_apps_account ON oauth_apps (account_id);

-- Issued token pairs (access + refresh), by the SHA-256 of each token. A refresh replaces
-- the row (rotation); a revocation deletes it.
CREATE TABLE oauth_tokens (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    app_id              TEXT COLLATE "C" NOT NULL REFERENCES oauth_apps(id) ON DELETE CASCADE,
    account_id          TEXT COLLATE "C" NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id             TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    access_hash         TEXT COLLATE "C" NOT NULL UNIQUE,
    access_expires_at   BIGINT NOT NULL,
    refresh_hash        TEXT COLLATE "C" NOT NULL UNIQUE,
    refresh_expires_at  BIGINT NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX oauth_tokens_user ON oauth_tokens (user_id, app_id);
