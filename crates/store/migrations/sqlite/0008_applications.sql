-- Applications: a call_hook (URL, method, optional basic auth), a status hook and a fallback
-- hook, per account; and the numbers routed to an application instead of a user.
CREATE TABLE applications (
    id                      TEXT PRIMARY KEY,
    account_id              TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name                    TEXT NOT NULL,
    call_hook_url           TEXT NOT NULL,
    call_hook_method        TEXT NOT NULL DEFAULT 'POST',
    call_hook_username      TEXT,
    call_hook_password      TEXT,
    status_hook_url         TEXT,
    status_hook_method      TEXT NOT NULL DEFAULT 'POST',
    status_hook_username    TEXT,
    status_hook_password    TEXT,
    fallback_url            TEXT,
    fallback_method         TEXT NOT NULL DEFAULT 'POST',
    fallback_username       TEXT,
    fallback_password       TEXT,
    created_at              BIGINT NOT NULL,
    UNIQUE (account_id, name)
);
CREATE INDEX applications_account ON applications (account_id);

-- A number (DID) routed to an application. Its digits are unique here and must not be one
-- of `numbers` either (checked on insert, both ways).
CREATE TABLE application_numbers (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    number          TEXT NOT NULL,
    digits          TEXT NOT NULL UNIQUE,
    application_id  TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    created_at      BIGINT NOT NULL
);
CREATE INDEX application_numbers_account ON application_numbers (account_id);

-- The secret an account's webhooks are signed with (jambonz: Jambonz-Signature).
ALTER TABLE accounts ADD COLUMN webhook_secret TEXT;
