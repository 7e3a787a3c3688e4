-- Erasure (DELETE /v1/accounts/{id}): the account is marked at once, and its rows are deleted
-- in small batches in the background (src/erasure.rs); the mark is durable, so an erasure cut
-- short by a crash goes on at the next start. The eraser finds marked accounts by the partial
-- index, and an account's webhooks, deleted ones included, by the second (the older
-- `webhooks_by_account` leaves deleted webhooks out, and the mark deletes them all).
ALTER TABLE accounts ADD COLUMN erasing_since BIGINT;
CREATE INDEX accounts_erasing ON accounts(erasing_since) WHERE erasing_since IS NOT NULL;
CREATE INDEX webhooks_of_account ON webhooks(account_id);
