-- no-transaction
-- The shops' /metrics report the age of the oldest undelivered event, found as the
-- smallest pending id: with this index one index entry, even when the workers have been
-- down for an hour and a million events wait (reading every pending row's created_at
-- then outlasted the scrape, and the backlog alert went blind when it mattered). Built
-- concurrently (hence outside a transaction) so that orders keep being written while it
-- is built on an environment that has taken many; IF NOT EXISTS lets a build cut short
-- be retried after its invalid index is dropped.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_pending_id_idx ON outbox (id) WHERE processed_at IS NULL;
