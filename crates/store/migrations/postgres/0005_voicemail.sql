-- PostgreSQL twin of migrations/sqlite/0005_voicemail.sql: the same tables and columns (checked by the
-- store test `migration_sets_define_the_same_schema`); change both together.
-- Voicemail and flip (call forwarding to a user's other phones).
-- Portable SQL (the SQLite set's statements): TEXT / BIGINT columns, booleans as 0/1 BIGINTs.

-- A user's mailbox: whether unanswered calls go to voicemail, and the custom greeting (a WAV
-- under data_dir/greetings; NULL = the default text-to-speech greeting).
CREATE TABLE mailboxes (
    user_id        TEXT COLLATE "C" PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    enabled        BIGINT NOT NULL DEFAULT 0,   -- 0 | 1
    greeting_path  TEXT COLLATE "C"
);

-- Voicemail messages: written when the recording starts (state 'recording') and completed when
-- it stops; rows left in 'recording' by a crash are repaired at start-up.
CREATE TABLE voicemail_messages (
    id           TEXT COLLATE "C" PRIMARY KEY,
    account_id   TEXT COLLATE "C" NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id      TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    call_id      TEXT COLLATE "C" NOT NULL,
    caller       TEXT COLLATE "C" NOT NULL,
    caller_name  TEXT COLLATE "C",
    path         TEXT COLLATE "C" NOT NULL,
    state        TEXT COLLATE "C" NOT NULL,               -- recording | complete | repaired
    created_at   BIGINT NOT NULL,             -- unix ms
    duration_ms  BIGINT,
    bytes        BIGINT
);
CREATE INDEX voicemail_messages_by_user ON voicemail_messages (account_id, user_id, created_at);
CREATE INDEX voicemail_messages_by_state ON voicemail_messages (state);

-- Flip targets of a user: numbers a call in progress can be moved to ("flip" it to the mobile).
CREATE TABLE user_forwardings (
    user_id  TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    flip_id  TEXT COLLATE "C" NOT NULL,
    number   TEXT COLLATE "C" NOT NULL,
    label    TEXT COLLATE "C",
    PRIMARY KEY (user_id, flip_id)
);
