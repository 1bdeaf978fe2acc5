-- With a broker (level 5 and up) the workers' relay sends each due event to it once and
-- records when; the broker's consumers settle it as before. A retry or a replay clears
-- the column so that the relay sends the event again. Without a broker it stays NULL.
-- A nullable column without a default is added without rewriting the table.
ALTER TABLE outbox ADD COLUMN relayed_at TIMESTAMPTZ;
