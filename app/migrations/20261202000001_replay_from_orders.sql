-- A replayed Idempotency-Key now answers with its order read back from the order tables
-- (orders::stored_order), so the checkout and flash-purchase transactions no longer
-- write a copy of the response: recording the order id joins the statement that places
-- the order, one round trip fewer while stock rows are locked. Every stored response
-- came with its order_id, so nothing a replay needs is lost.
ALTER TABLE idempotency_keys DROP COLUMN response;
