-- Seed data for development and load tests, and a production's first admin (bin/seed). Every
-- statement is idempotent.

-- name: seed_user(email, password_hash, full_name, role)^
-- A contract user, its email verified; an existing email is left as it is.
INSERT INTO users (email, password_hash, full_name, role, email_verified)
     VALUES (:email, :password_hash, :full_name, :role, true)
ON CONFLICT ((lower(email))) DO NOTHING
  RETURNING id;

-- name: active_admin_exists()$
-- Whether an active ADMIN account exists (a production seed creates the first one otherwise).
SELECT EXISTS (SELECT 1 FROM users WHERE role = 'ADMIN' AND is_active);

-- name: seed_category(name, slug, description)$
-- A category by name; returns its id whether it was just created or already there.
WITH inserted AS (
    INSERT INTO categories (name, slug, description)
         VALUES (:name, :slug, :description)
    ON CONFLICT ((lower(name))) DO NOTHING
      RETURNING id
)
SELECT id FROM inserted
 UNION ALL
SELECT id FROM categories WHERE lower(name) = lower(:name)
 LIMIT 1;

-- name: seed_product(name, description, price_cents, stock, category_id)$
-- A catalog product by name, with its opening stock in the ledger; skipped when it exists.
WITH inserted AS (
    INSERT INTO products (name, description, price_cents, stock, category_id)
    SELECT :name, :description, :price_cents, :stock, :category_id
     WHERE NOT EXISTS (SELECT 1 FROM products WHERE name = :name)
    RETURNING id, stock
), ledger AS (
    INSERT INTO stock_movements (product_id, delta, reason)
    SELECT id, stock, 'adjust' FROM inserted WHERE stock > 0
)
SELECT count(*) FROM inserted;

-- name: count_generated_products()$
-- How many load-test products exist already (so --products N tops up to N).
SELECT count(*) FROM products WHERE name LIKE 'Generated product %%';

-- name: seed_generated_products(first, last, category_ids)$
-- A batch of load-test products numbered first..last, spread over the given categories,
-- with searchable nouns in name and description, and their opening stock in the ledger.
WITH nouns AS (
    SELECT ARRAY['lamp', 'chair', 'table', 'phone', 'camera', 'guitar', 'jacket', 'kettle',
                 'bottle', 'backpack', 'watch', 'speaker', 'monitor', 'keyboard', 'mouse',
                 'blender', 'candle', 'notebook', 'pillow', 'sneaker'] AS words
), inserted AS (
    INSERT INTO products (name, description, price_cents, stock, category_id)
    SELECT format('Generated product %%s %%s', lpad(n::text, 6, '0'), words[1 + n %% 20]),
           format('A fine %%s, model %%s, for everyday use', words[1 + (n * 7) %% 20], n),
           100 + (n * 7919) %% 99900,
           100 + n %% 900,
           (:category_ids::bigint[])[1 + n %% cardinality(:category_ids::bigint[])]
      FROM generate_series(:first::int, :last::int) AS n, nouns
    RETURNING id, stock
), ledger AS (
    INSERT INTO stock_movements (product_id, delta, reason)
    SELECT id, stock, 'adjust' FROM inserted
)
SELECT count(*) FROM inserted;

-- name: seed_shipping_method(name, price_cents, free_over_cents, countries)$
-- A shipping method by name (any case); 1 when created, 0 when one of that name exists
-- (left as it is: staff may have changed its price since).
WITH inserted AS (
    INSERT INTO shipping_methods (name, price_cents, free_over_cents, countries)
         VALUES (:name, :price_cents, :free_over_cents::bigint, :countries::text[])
    ON CONFLICT ((lower(name))) DO NOTHING
      RETURNING id
)
SELECT count(*) FROM inserted;
