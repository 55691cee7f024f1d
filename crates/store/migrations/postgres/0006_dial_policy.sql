-- PostgreSQL twin of migrations/sqlite/0006_dial_policy.sql: the same tables and columns (checked by the
-- store test `migration_sets_define_the_same_schema`); change both together.
-- Dial permissions (toll-fraud defence): what an account's users and API may dial, and brakes
-- on outbound trunk calls. Portable SQL (the SQLite set's statements): TEXT / BIGINT columns,
-- booleans as 0/1 BIGINTs.
--
-- dial_classes is a comma-separated list of 'internal', 'national', 'international',
-- 'premium'. The column default keeps international dialling for the accounts that exist
-- before this upgrade, so their international calls do not start failing (premium-rate
-- numbers are refused from now on); a new account is inserted with 'internal,national' by the
-- application.

ALTER TABLE accounts ADD COLUMN country_code TEXT COLLATE "C" NULL;   -- '49' (no '+'); NULL: inferred from the account's numbers
ALTER TABLE accounts ADD COLUMN dial_classes TEXT COLLATE "C" NOT NULL DEFAULT 'internal,national,international';
ALTER TABLE accounts ADD COLUMN outside_sessions BIGINT NOT NULL DEFAULT 0;           -- 0 | 1: click-to-dial between two outside numbers
ALTER TABLE accounts ADD COLUMN max_outbound_calls BIGINT NOT NULL DEFAULT 20;        -- concurrent calls with a trunk leg; 0 = unlimited
ALTER TABLE accounts ADD COLUMN outbound_calls_per_minute BIGINT NOT NULL DEFAULT 60; -- trunk legs started per minute; 0 = unlimited

-- A user's own dial classes (same format); NULL: the account's. The engine intersects both.
ALTER TABLE users ADD COLUMN dial_classes TEXT COLLATE "C" NULL;
