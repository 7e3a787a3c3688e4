-- Herald's schema on PostgreSQL. Times are milliseconds since the Unix epoch.

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    key_hash    TEXT NOT NULL UNIQUE,   -- hex SHA-256 of the key; the key itself is never stored
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE webhooks (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    url          TEXT NOT NULL,
    events       TEXT NOT NULL,          -- JSON array of filters: "tts.completed", "tts.*", "*"
    secret       TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    retry        TEXT NOT NULL,          -- JSON of the effective retry policy
    status       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    deleted_at   BIGINT
);
CREATE INDEX webhooks_by_account ON webhooks(account_id, id) WHERE deleted_at IS NULL;

CREATE TABLE events (
    id                       TEXT PRIMARY KEY,
    account_id               TEXT NOT NULL REFERENCES accounts(id),
    type                     TEXT NOT NULL,
    timestamp                BIGINT NOT NULL,
    data                     TEXT NOT NULL,  -- the producer's JSON, byte for byte
    idempotency_key          TEXT,
    idempotency_fingerprint  TEXT,
    created_at               BIGINT NOT NULL
);
CREATE INDEX events_by_account ON events(account_id, id);
CREATE UNIQUE INDEX events_idempotency ON events(account_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    event_id         TEXT NOT NULL REFERENCES events(id),
    event_type       TEXT NOT NULL,
    webhook_id       TEXT NOT NULL REFERENCES webhooks(id),
    status           TEXT NOT NULL,
    attempts_made    BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,            -- set while pending
    lease            TEXT,               -- the claim batch holding it
    locked_until     BIGINT,            -- when that lease expires
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON deliveries(lease) WHERE lease IS NOT NULL;
CREATE INDEX deliveries_by_account ON deliveries(account_id, id);
CREATE INDEX deliveries_by_event ON deliveries(event_id);
CREATE INDEX deliveries_by_webhook ON deliveries(webhook_id, id);

CREATE TABLE attempts (
    id             TEXT PRIMARY KEY,
    delivery_id    TEXT NOT NULL REFERENCES deliveries(id),
    number         BIGINT NOT NULL,
    started_at     BIGINT NOT NULL,
    duration_ms    BIGINT NOT NULL,
    status_code    BIGINT,
    error_kind     TEXT,
    error          TEXT,
    response_body  TEXT
);
CREATE INDEX attempts_by_delivery ON attempts(delivery_id, number);
