-- PostgreSQL twin of migrations/sqlite/0008_applications.sql: the same tables and columns (checked by the
-- store test `migration_sets_define_the_same_schema`); change both together.
-- Applications: a call_hook (URL, method, optional basic auth), a status hook and a fallback
-- hook, per account; and the numbers routed to an application instead of a user.
CREATE TABLE applications (
    id                      TEXT COLLATE "C" PRIMARY KEY,
    account_id              TEXT COLLATE "C" NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name                    TEXT COLLATE "C" NOT NULL,
    call_hook_url           TEXT COLLATE "C" NOT NULL,
    call_hook_method        TEXT COLLATE "C" NOT NULL DEFAULT 'POST',
    call_hook_username      TEXT COLLATE "C",
    call_hook_password      TEXT COLLATE "C",
    status_hook_url         TEXT COLLATE "C",
    status_hook_method      TEXT COLLATE "C" NOT NULL DEFAULT 'POST',
    status_hook_username    TEXT COLLATE "C",
    status_hook_password    TEXT COLLATE "C",
    fallback_url            TEXT COLLATE "C",
    fallback_method         TEXT COLLATE "C" NOT NULL DEFAULT 'POST',
    fallback_username       TEXT COLLATE "C",
    fallback_password       TEXT COLLATE "C",
    created_at              BIGINT NOT NULL,
    UNIQUE (account_id, name)
);
CREATE INDEX applications_account ON applications (account_id);

-- A number (DID) routed to an application. Its digits are unique here and must not be one
-- of `numbers` either (checked on insert, both ways).
CREATE TABLE application_numbers (
    id              TEXT COLLATE "C" PRIMARY KEY,
    account_id      TEXT COLLATE "C" NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    number          TEXT COLLATE "C" NOT NULL,
    digits          TEXT COLLATE "C" NOT NULL UNIQUE,
    application_id  TEXT COLLATE "C" NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    created_at      BIGINT NOT NULL
);
CREATE INDEX application_numbers_account ON application_numbers (account_id);

-- The secret an account's webhooks are signed with (jambonz: Jambonz-Signature).
ALTER TABLE accounts ADD COLUMN webhook_secret TEXT COLLATE "C";
