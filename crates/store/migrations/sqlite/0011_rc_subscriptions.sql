-- RingCentral WebHook subscriptions (the dialect's /restapi/v1.0/subscription), kept so they
-- survive a restart. WebSocket subscriptions live with their connection and are not stored.
-- `event_filters` is the JSON array of the filters as the subscription names them.
CREATE TABLE rc_subscriptions (
    id                  TEXT PRIMARY KEY,
    account_id          TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    event_filters       TEXT NOT NULL,
    address             TEXT NOT NULL,
    verification_token  TEXT,
    created_ms          BIGINT NOT NULL,
    expires_ms          BIGINT NOT NULL
);
CREATE INDEX rc_subscriptions_expiry ON rc_subscriptions (expires_ms);
