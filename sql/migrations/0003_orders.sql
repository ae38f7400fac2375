-- Orders, their lines, their status audit trail and idempotency keys.
-- depends: 0002_catalog

CREATE TABLE orders (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- users with orders are deactivated, never deleted: orders are never lost
    user_id     bigint      NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    status      text        NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
    total_cents bigint      NOT NULL CHECK (total_cents >= 0),
    currency    text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX orders_created_idx      ON orders (created_at, id);
CREATE INDEX orders_user_created_idx ON orders (user_id, created_at, id);
CREATE INDEX orders_status_idx       ON orders (status, created_at, id);

CREATE TABLE order_items (
    order_id         bigint  NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    -- products in an order are deactivated, never deleted: history stays whole
    product_id       bigint  NOT NULL REFERENCES products (id) ON DELETE RESTRICT,
    -- copied at purchase time; later product edits do not change past orders
    name             text    NOT NULL,
    unit_price_cents bigint  NOT NULL CHECK (unit_price_cents >= 0),
    quantity         integer NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    line_total_cents bigint  GENERATED ALWAYS AS (unit_price_cents * quantity) STORED,
    PRIMARY KEY (order_id, product_id)
);

CREATE INDEX order_items_product_idx ON order_items (product_id);

CREATE TABLE order_status_history (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id   bigint      NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    status     text        NOT NULL,
    by_user_id bigint,
    at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX order_status_history_order_idx ON order_status_history (order_id, id);

CREATE TABLE idempotency_keys (
    user_id      bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key          text        NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    -- sha256 of the canonical request body: same key + other body is a 409
    request_hash bytea       NOT NULL,
    order_id     bigint      NOT NULL,
    -- the first 201 answer, replayed byte for byte
    response     bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

-- clean-up of keys older than the retention window (shopapi purge-idempotency-keys)
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
