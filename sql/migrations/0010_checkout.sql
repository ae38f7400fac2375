-- Checkout: the address book, shipping methods, carts (user and guest), and orders that
-- carry their subtotal, shipping, address copy, payment state and pending-order count.
-- depends: 0009_account_lifecycle

-- ------------------------------------------------------------------ address book

CREATE TABLE addresses (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    full_name   text        NOT NULL CHECK (char_length(full_name) BETWEEN 1 AND 200),
    line1       text        NOT NULL CHECK (char_length(line1) BETWEEN 1 AND 200),
    line2       text        NOT NULL DEFAULT '' CHECK (char_length(line2) <= 200),
    city        text        NOT NULL CHECK (char_length(city) BETWEEN 1 AND 100),
    region      text        NOT NULL DEFAULT '' CHECK (char_length(region) <= 100),
    postal_code text        NOT NULL CHECK (char_length(postal_code) BETWEEN 1 AND 20),
    country     text        NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    phone       text        NOT NULL DEFAULT '' CHECK (char_length(phone) <= 32),
    is_default  boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- a user's book, by id (the list order and the per-user limit count)
CREATE INDEX addresses_user_idx ON addresses (user_id, id);
-- at most one default per user, kept by the database whatever races
CREATE UNIQUE INDEX addresses_one_default_idx ON addresses (user_id) WHERE is_default;

-- ------------------------------------------------------------------ shipping methods

CREATE TABLE shipping_methods (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    price_cents     bigint      NOT NULL CHECK (price_cents BETWEEN 0 AND 1000000000000),
    -- shipping is free when the order's subtotal reaches this (NULL: never free)
    free_over_cents bigint      CHECK (free_over_cents BETWEEN 0 AND 1000000000000),
    -- ISO 3166-1 alpha-2 codes it ships to; empty: everywhere
    countries       text[]      NOT NULL DEFAULT '{}',
    is_active       boolean     NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX shipping_methods_name_key ON shipping_methods (lower(name));

-- ------------------------------------------------------------------ carts

-- One cart per user (user_id) or per guest (token_hash: sha256 of the X-Cart-Token secret,
-- which is never stored). Guest carts expire CART_TTL seconds after their last change.
CREATE TABLE carts (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    token_hash bytea       UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    CHECK ((user_id IS NULL) <> (token_hash IS NULL)),
    CHECK ((token_hash IS NULL) = (expires_at IS NULL))
);
-- the housekeeping purge of expired guest carts
CREATE INDEX carts_guest_expiry_idx ON carts (expires_at) WHERE token_hash IS NOT NULL;

-- No foreign key to products: a line whose product was deleted stays, shown as unavailable
-- (with the name and price it had when last set) until the customer removes it.
CREATE TABLE cart_items (
    cart_id          bigint      NOT NULL REFERENCES carts (id) ON DELETE CASCADE,
    product_id       bigint      NOT NULL,
    quantity         integer     NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    -- the product as it was when the line was last set: shown only once the product is gone
    name             text        NOT NULL,
    unit_price_cents bigint      NOT NULL,
    -- lines are listed in the order they were first added
    added            bigint      GENERATED ALWAYS AS IDENTITY,
    added_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cart_id, product_id)
);

-- ------------------------------------------------------------------ orders

ALTER TABLE orders
    ADD COLUMN shipping_cents       bigint NOT NULL DEFAULT 0 CHECK (shipping_cents >= 0),
    -- the address as it was at checkout: editing or deleting it never changes the order
    ADD COLUMN shipping_address     jsonb,
    ADD COLUMN shipping_method_id   bigint REFERENCES shipping_methods (id) ON DELETE RESTRICT,
    ADD COLUMN shipping_method_name text,
    ADD COLUMN payment_provider     text NOT NULL DEFAULT 'manual'
                                    CHECK (payment_provider IN ('manual', 'stripe')),
    ADD COLUMN payment_status       text NOT NULL DEFAULT 'unpaid'
                                    CHECK (payment_status IN ('unpaid', 'processing', 'succeeded',
                                                              'failed', 'refunded')),
    -- when an unpaid pending order is cancelled automatically (NULL: never)
    ADD COLUMN expires_at           timestamptz;
-- total_cents = subtotal_cents + shipping_cents by construction: the subtotal (the lines) is
-- derived, so no writer can make the three disagree (existing orders: subtotal = total)
ALTER TABLE orders
    ADD COLUMN subtotal_cents bigint GENERATED ALWAYS AS (total_cents - shipping_cents) STORED
                              CHECK (subtotal_cents >= 0);
-- "is this method used by any order" (a used method is deactivated, not deleted)
CREATE INDEX orders_shipping_method_idx ON orders (shipping_method_id)
    WHERE shipping_method_id IS NOT NULL;

-- MAX_PENDING_ORDERS: the user's pending orders, counted on the user row. The placement
-- locks that row and reads this count as latest committed (a count over orders would be
-- read from the statement's snapshot, and racing orders could each see room for one more);
-- every move out of pending (status change, deletion) takes one off in the same statement.
ALTER TABLE users
    ADD COLUMN pending_orders integer NOT NULL DEFAULT 0 CHECK (pending_orders >= 0);
UPDATE users u
   SET pending_orders = p.n
  FROM (SELECT user_id, count(*) AS n FROM orders WHERE status = 'pending' GROUP BY user_id) p
 WHERE p.user_id = u.id;

-- The order document gains the checkout fields (appended: the view's old columns stay).
CREATE OR REPLACE VIEW order_documents AS
SELECT o.id, o.user_id, o.status, o.total_cents, o.currency,
       api_time(o.created_at) AS created_at, api_time(o.updated_at) AS updated_at,
       (SELECT json_agg(json_build_object(
                   'product_id', i.product_id, 'name', i.name, 'quantity', i.quantity,
                   'unit_price_cents', i.unit_price_cents,
                   'line_total_cents', i.line_total_cents)
               ORDER BY i.product_id)
          FROM order_items i
         WHERE i.order_id = o.id) AS items,
       (SELECT json_agg(json_build_object(
                   'status', h.status, 'at', api_time(h.at), 'by_user_id', h.by_user_id)
               ORDER BY h.id)
          FROM order_status_history h
         WHERE h.order_id = o.id) AS status_history,
       o.subtotal_cents, o.shipping_cents, o.shipping_address,
       CASE WHEN o.shipping_method_id IS NOT NULL
            THEN json_build_object('id', o.shipping_method_id, 'name', o.shipping_method_name)
       END AS shipping_method,
       json_build_object('provider', o.payment_provider, 'status', o.payment_status) AS payment,
       api_time(o.expires_at) AS expires_at
  FROM orders o;
