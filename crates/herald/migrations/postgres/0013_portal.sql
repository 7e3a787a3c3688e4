-- The customer portal: one-time links a provider hands its customer, and the sessions they open.
-- Only the SHA-256 of each token is stored (as for API keys): a copy of the database opens no
-- portal. A link is used once (`used_at`); both expire.
CREATE TABLE portal_links (
    token_hash  TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX portal_links_expiry ON portal_links(expires_at);

CREATE TABLE portal_sessions (
    token_hash  TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX portal_sessions_expiry ON portal_sessions(expires_at);
