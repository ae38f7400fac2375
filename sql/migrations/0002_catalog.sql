-- Catalog, categories, products and the stock ledger.
-- depends: 0001_users

CREATE TABLE categories (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    -- derived from the name at creation, stable on rename so links keep working
    slug        text        NOT NULL UNIQUE,
    description text        NOT NULL DEFAULT '' CHECK (char_length(description) <= 5000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX categories_name_lower_key ON categories (lower(name));

CREATE TABLE products (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description text        NOT NULL DEFAULT '' CHECK (char_length(description) <= 5000),
    price_cents bigint      NOT NULL CHECK (price_cents BETWEEN 0 AND 1000000000000),
    -- the last line of defence against overselling
    stock       integer     NOT NULL DEFAULT 0 CHECK (stock >= 0),
    image_url   text        CHECK (char_length(image_url) <= 2048),
    category_id bigint      NOT NULL REFERENCES categories (id) ON DELETE RESTRICT,
    is_active   boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- full-text search: name ranks above description
    search      tsvector    GENERATED ALWAYS AS (
                    setweight(to_tsvector('english', name), 'A') ||
                    setweight(to_tsvector('english', description), 'B')
                ) STORED
);

CREATE INDEX products_search_idx ON products USING gin (search);
-- list sorts, public view (active only), each ending with id as the tie-breaker
CREATE INDEX products_active_created_idx ON products (created_at, id) WHERE is_active;
CREATE INDEX products_active_price_idx   ON products (price_cents, id) WHERE is_active;
CREATE INDEX products_active_name_idx    ON products (name, id) WHERE is_active;
CREATE INDEX products_category_idx       ON products (category_id, created_at, id);
-- short-prefix search fallback (name ILIKE 'ab%')
CREATE INDEX products_name_lower_idx     ON products (lower(name) text_pattern_ops);

CREATE TABLE stock_movements (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product_id  bigint      NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    delta       integer     NOT NULL CHECK (delta <> 0),
    reason      text        NOT NULL CHECK (reason IN ('order', 'cancel', 'adjust')),
    -- no foreign keys: the ledger outlives deleted orders and users
    order_id    bigint,
    by_user_id  bigint,
    at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX stock_movements_product_idx ON stock_movements (product_id, id);
