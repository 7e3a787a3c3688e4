-- API keys an account manages itself: a label, the first characters of the key (shown in lists
-- so a person can tell keys apart; the key itself is never stored), and when it was last used.
-- Keys made before this have an empty prefix.
ALTER TABLE api_keys ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN prefix TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
CREATE INDEX api_keys_by_account ON api_keys(account_id, id);
