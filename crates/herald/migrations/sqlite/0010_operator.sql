-- Operator events: the start of the failing spell that was reported to the operator
-- (webhook.failing or webhook.disabled), so that a spell is reported once and its end
-- (webhook.recovered) is known; NULL when none is reported. See src/store/operator.rs.
ALTER TABLE webhooks ADD COLUMN reported_failing_since INTEGER;
