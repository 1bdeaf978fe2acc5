-- The whole shop schema. Money is BIGINT cents; ids are BIGINT identities so keyset
-- pagination is a plain index range scan. CHECK constraints are the second line of
-- defence behind the conditional UPDATEs in the code: stock can never go negative.

CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL CHECK (roles IN ('buyer', 'seller', 'both')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- Bearer tokens are stored as sha256 digests: a leaked table cannot be replayed.
CREATE TABLE sessions (
    token_hash BYTEA PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

CREATE TABLE shops (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id   BIGINT NOT NULL REFERENCES users (id),
    name       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX shops_owner_id_idx ON shops (owner_id);

CREATE TABLE products (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shop_id     BIGINT NOT NULL REFERENCES shops (id),
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    stock       INTEGER NOT NULL CHECK (stock >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX products_shop_id_id_idx ON products (shop_id, id);
CREATE INDEX products_price_idx ON products (price_cents, id);

CREATE TABLE cart_items (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    product_id BIGINT NOT NULL REFERENCES products (id),
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, product_id)
);

CREATE TABLE orders (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         BIGINT NOT NULL REFERENCES users (id),
    kind            TEXT NOT NULL CHECK (kind IN ('cart', 'flash')),
    status          TEXT NOT NULL DEFAULT 'paid',
    total_cents     BIGINT NOT NULL CHECK (total_cents >= 0),
    idempotency_key TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- An acknowledged order exists exactly once per client retry.
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX orders_user_id_id_idx ON orders (user_id, id);

CREATE TABLE order_items (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id         BIGINT NOT NULL REFERENCES orders (id),
    product_id       BIGINT NOT NULL REFERENCES products (id),
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0)
);
CREATE INDEX order_items_order_id_idx ON order_items (order_id);
CREATE INDEX order_items_product_id_idx ON order_items (product_id);

-- Written first in the checkout transaction; the primary key decides races between
-- two requests carrying the same key.
CREATE TABLE idempotency_keys (
    user_id      BIGINT NOT NULL REFERENCES users (id),
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    order_id     BIGINT REFERENCES orders (id),
    response     JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

CREATE TABLE payments (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id     BIGINT NOT NULL UNIQUE REFERENCES orders (id),
    amount_cents BIGINT NOT NULL,
    provider     TEXT NOT NULL,
    provider_ref TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE invoices (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id     BIGINT NOT NULL UNIQUE REFERENCES orders (id),
    number       TEXT NOT NULL UNIQUE,
    amount_cents BIGINT NOT NULL,
    issued_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE deliveries (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id     BIGINT NOT NULL UNIQUE REFERENCES orders (id),
    status       TEXT NOT NULL,
    scheduled_for TIMESTAMPTZ NOT NULL
);

-- One refund per order item: a second return of the same item violates the key.
CREATE TABLE refunds (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id      BIGINT NOT NULL REFERENCES orders (id),
    order_item_id BIGINT NOT NULL UNIQUE REFERENCES order_items (id),
    quantity      INTEGER NOT NULL CHECK (quantity > 0),
    amount_cents  BIGINT NOT NULL CHECK (amount_cents >= 0),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE reviews (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product_id BIGINT NOT NULL REFERENCES products (id),
    user_id    BIGINT NOT NULL REFERENCES users (id),
    rating     SMALLINT NOT NULL CHECK (rating BETWEEN 1 AND 5),
    body       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (product_id, user_id)
);
CREATE INDEX reviews_product_id_id_idx ON reviews (product_id, id);

CREATE TABLE flash_sales (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product_id      BIGINT NOT NULL REFERENCES products (id),
    seller_id       BIGINT NOT NULL REFERENCES users (id),
    units           INTEGER NOT NULL CHECK (units > 0),
    remaining       INTEGER NOT NULL CHECK (remaining >= 0 AND remaining <= units),
    starts_at       TIMESTAMPTZ NOT NULL,
    per_buyer_limit INTEGER NOT NULL CHECK (per_buyer_limit > 0),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Units bought per buyer per sale; the upsert refuses to pass the limit.
CREATE TABLE flash_purchases (
    sale_id  BIGINT NOT NULL REFERENCES flash_sales (id),
    buyer_id BIGINT NOT NULL REFERENCES users (id),
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (sale_id, buyer_id)
);

CREATE TABLE outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic           TEXT NOT NULL,
    payload         JSONB NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error      TEXT,
    processed_at    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX outbox_pending_idx ON outbox (next_attempt_at, id) WHERE processed_at IS NULL;

-- outbox_id is unique: a notification is recorded at most once per event.
CREATE TABLE notifications (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id  BIGINT NOT NULL UNIQUE REFERENCES outbox (id),
    channel    TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE dead_letters (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id  BIGINT NOT NULL UNIQUE REFERENCES outbox (id),
    topic      TEXT NOT NULL,
    payload    JSONB NOT NULL,
    attempts   INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
