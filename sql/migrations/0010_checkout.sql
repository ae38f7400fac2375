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

-- MAX_PENDING_ORDERS: a pending order holds one of its buyer's numbered slots 1..limit,
-- unique per buyer, and gives it back (NULL) when it leaves pending. A placement takes the
-- lowest free slot; two racing placements that pick the same one collide on this index
-- and the later one runs again with the slot taken, so no buyer ever holds more pending
-- orders than slots. With MAX_PENDING_ORDERS=0 (no limit) orders take no slot: nothing to
-- write, and those orders do not count should a limit be set later.
ALTER TABLE orders ADD COLUMN pending_slot integer CHECK (pending_slot > 0);
CREATE UNIQUE INDEX orders_pending_slot_key ON orders (user_id, pending_slot)
    WHERE pending_slot IS NOT NULL;
UPDATE orders o
   SET pending_slot = n.slot
  FROM (SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY id) AS slot
          FROM orders
         WHERE status = 'pending') n
 WHERE n.id = o.id;

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

-- Where an order goes and what shipping costs, for place_order (sql/queries/orders.sql): the
-- address sent inline (_address) or a copy of one of the buyer's own (_address_id), and the
-- active method _method_id, its row locked (FOR SHARE) so its price cannot change before the
-- order commits. One row; `refused` says why the order cannot go there:
-- 'address' (not one of the buyer's), 'method' (unknown or inactive), 'country' (the method
-- does not ship to the address's country). A function rather than CTEs of place_order: an
-- order without a shipment (the common case) then plans and locks neither table.
CREATE FUNCTION order_shipment(_user_id bigint, _address jsonb, _address_id bigint,
                               _method_id bigint)
RETURNS TABLE (address jsonb, method_id bigint, method_name text, price_cents bigint,
               free_over_cents bigint, refused text)
LANGUAGE plpgsql
ROWS 1  -- always one row: keeps place_order's generic plan cheap (see orders.sql)
AS $$
DECLARE
    ships boolean;
BEGIN
    address := _address;
    IF _address_id IS NOT NULL THEN
        SELECT jsonb_build_object('full_name', a.full_name, 'line1', a.line1,
                                  'line2', a.line2, 'city', a.city, 'region', a.region,
                                  'postal_code', a.postal_code, 'country', a.country,
                                  'phone', a.phone)
          INTO address
          FROM addresses a
         WHERE a.id = _address_id
           AND a.user_id = _user_id;
        IF address IS NULL THEN
            refused := 'address';
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    IF _method_id IS NOT NULL THEN
        SELECT m.id, m.name, m.price_cents, m.free_over_cents,
               cardinality(m.countries) = 0 OR (address ->> 'country') = ANY (m.countries)
          INTO method_id, method_name, price_cents, free_over_cents, ships
          FROM shipping_methods m
         WHERE m.id = _method_id
           AND m.is_active
           FOR SHARE;
        IF NOT FOUND THEN
            refused := 'method';
        ELSIF NOT ships THEN
            refused := 'country';
        END IF;
    END IF;
    RETURN NEXT;
END
$$;
