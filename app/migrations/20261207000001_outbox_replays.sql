-- How many times an operator sent a dead-lettered event back to the outbox
-- (`scalectl queue dlq replay`), so a replay that dies again is told apart from a
-- first failure. A constant default adds the column without rewriting the table.
ALTER TABLE outbox ADD COLUMN replays INTEGER NOT NULL DEFAULT 0;

-- `scalectl queue status` reads the delivery lag of the last minutes; without this
-- index it would scan every notification ever sent.
CREATE INDEX notifications_created_idx ON notifications (created_at);
