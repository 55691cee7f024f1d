-- PostgreSQL twin of migrations/sqlite/0011_rc_subscriptions.sql: the same tables and columns (checked by the
-- store test `migration_sets_define_the_same_schema`); change both together.
-- RingCentral WebHook subscriptions (the dialect's /restapi/v1.0/subscription), kept so they
-- survive a restart. WebSocket subscriptions live with their connection and are not stored.
-- `event_filters` is the JSON array of the filters as the subscription names them.
CREATE TABLE rc_subscriptions (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    account_id          TEXT COLLATE "C" NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id             TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    event_filters       TEXT COLLATE "C" NOT NULL,
    address             TEXT COLLATE "C" NOT NULL,
    verification_token  TEXT COLLATE "C",
    created_ms          BIGINT NOT NULL,
    expires_ms          BIGINT NOT NULL
);
CREATE INDEX rc_subscriptions_expiry ON rc_subscriptions (expires_ms);
