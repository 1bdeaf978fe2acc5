-- no-transaction
-- What the relay looks for: due events not yet sent to the broker. Without this index
-- every relay pass would step over the events that wait in the broker, which is the
-- whole backlog when consumers fall behind. Built concurrently, as
-- outbox_pending_id_idx, so that orders keep being written meanwhile.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_unrelayed_idx ON outbox (next_attempt_at, id)
    WHERE processed_at IS NULL AND relayed_at IS NULL;
