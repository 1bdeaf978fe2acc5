-- pgbench script for bench/shop.sh: the SQL the shop runs for one order, statement for
-- statement — POST /cart/items (the cart upsert; its foreign key checks the product), then
-- POST /checkout (the checkout transaction of app/src/checkout.rs and
-- orders::place_order). The shop's session lookups are not here: after the warm-up they
-- are answered by its session cache (SHOP_SESSION_CACHE_SECS), not the database. The
-- buyer's email, which the shop has from that cache, is computed from the buyer's id
-- the way bench/shop.sh named them. Client N is buyer :buyer0 + N buying product :product0 + N,
-- the same pairing the wrk run uses, so neither side contends on a row.
-- Prepared statements (-M prepared), as sqlx's statement cache does.
-- Run: pgbench -n -M prepared -c 16 -j 2 -T 10 -D buyer0=ID -D product0=ID -f bench/checkout.sql

\set uid :buyer0 + :client_id
\set pid :product0 + :client_id
\set k random(1, 9000000000000000000)

-- POST /cart/items
INSERT INTO cart_items (user_id, product_id, quantity) VALUES (:uid, :pid, 1)
 ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = cart_items.quantity + EXCLUDED.quantity
 WHERE cart_items.quantity + EXCLUDED.quantity <= 1000000
 RETURNING id, product_id, quantity;

-- POST /checkout
BEGIN;
SELECT id AS cart_id, product_id, quantity FROM cart_items WHERE user_id = :uid ORDER BY product_id FOR UPDATE
\gset
INSERT INTO idempotency_keys (user_id, key, request_hash)
 VALUES (:uid, 'pg-' || :k, encode(sha256(convert_to('checkout;' || :pid || 'x1', 'UTF8')), 'hex'))
 ON CONFLICT (user_id, key) DO NOTHING;
UPDATE products p SET stock = p.stock - c.q, updated_at = now()
 FROM (SELECT id FROM products WHERE id = ANY(ARRAY[:pid]::bigint[]) ORDER BY id FOR UPDATE) AS locked,
      unnest(ARRAY[:pid]::bigint[], ARRAY[1]::int[]) AS c(id, q)
 WHERE p.id = ANY(ARRAY[:pid]::bigint[]) AND p.id = locked.id AND p.id = c.id AND p.stock >= c.q
 RETURNING p.id, p.price_cents
\gset p_
WITH o AS (
     INSERT INTO orders (user_id, kind, total_cents, idempotency_key) VALUES (:uid, 'cart', :p_price_cents, 'pg-' || :k)
     RETURNING id, user_id, kind, status, total_cents, created_at),
 items AS (
     INSERT INTO order_items (order_id, product_id, quantity, unit_price_cents)
     SELECT o.id, l.* FROM o, unnest(ARRAY[:pid]::bigint[], ARRAY[1]::int[], ARRAY[:p_price_cents]::bigint[]) AS l
     RETURNING id, product_id, quantity, unit_price_cents),
 payment AS (
     INSERT INTO payments (order_id, amount_cents, provider, provider_ref, status)
     SELECT id, :p_price_cents, 'simulated', 'sim_' || id, 'captured' FROM o
     ON CONFLICT (order_id) DO NOTHING),
 invoice AS (
     INSERT INTO invoices (order_id, number, amount_cents)
     SELECT id, 'INV-' || lpad(id::text, 10, '0'), :p_price_cents FROM o),
 delivery AS (
     INSERT INTO deliveries (order_id, status, scheduled_for)
     SELECT id, 'scheduled', now() + interval '2 days' FROM o),
 event AS (
     INSERT INTO outbox (topic, payload)
     SELECT 'order.placed', jsonb_build_object('order_id', id, 'user_id', :uid::bigint,
         'email', 'buyer-' || :uid::bigint || '@bench.test', 'total_cents', :p_price_cents::bigint) FROM o),
 answer AS (
     UPDATE idempotency_keys k SET order_id = o.id FROM o
     WHERE k.user_id = :uid AND k.key = 'pg-' || :k),
 emptied AS (DELETE FROM cart_items WHERE id = ANY(ARRAY[:cart_id]::bigint[]))
 SELECT o.id, o.user_id, o.kind, o.status, o.total_cents, o.created_at,
        items.id AS item_id, items.product_id, items.quantity, items.unit_price_cents
 FROM o, items ORDER BY items.id;
COMMIT;
