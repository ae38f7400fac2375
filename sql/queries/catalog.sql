-- Catalog: categories, products and the stock ledger.

-- name: insert_category(name, slug, description)^
-- A new category; a name clash raises unique_violation (categories_name_lower_key).
INSERT INTO categories (name, slug, description)
     VALUES (:name, :slug, :description)
  RETURNING id, name, slug, description,
            api_time(created_at) AS created_at, api_time(updated_at) AS updated_at;

-- name: insert_product(name, description, price_cents, stock, image_url, category_id, is_active)^
-- A new product; its initial stock is written to the ledger by the caller (insert_stock_movement).
INSERT INTO products (name, description, price_cents, stock, image_url, category_id, is_active)
     VALUES (:name, :description, :price_cents, :stock, :image_url, :category_id, :is_active)
  RETURNING id;

-- name: insert_stock_movement(product_id, delta, reason, order_id, by_user_id)!
-- One ledger row; for every product the sum of its deltas equals its stock.
INSERT INTO stock_movements (product_id, delta, reason, order_id, by_user_id)
     VALUES (:product_id, :delta, :reason, :order_id, :by_user_id);

-- ---------------------------------------------------------------- categories

-- name: get_category(id)^
-- The public category by id.
SELECT id, name, slug, description,
       api_time(created_at) AS created_at, api_time(updated_at) AS updated_at
  FROM categories
 WHERE id = :id;

-- name: list_categories(q, limit, offset)
-- Public listing by id; `q` is an escaped ILIKE pattern; total rides on every row.
SELECT id, name, slug, description,
       api_time(created_at) AS created_at, api_time(updated_at) AS updated_at,
       count(*) OVER () AS total
  FROM categories
 WHERE (:q::text IS NULL OR name ILIKE :q)
 ORDER BY id
 LIMIT :limit OFFSET :offset;

-- name: count_categories(q)$
-- Total for a page past the end (where no row carries the window count).
SELECT count(*)
  FROM categories
 WHERE (:q::text IS NULL OR name ILIKE :q);

-- name: list_category_slugs(base)
-- Slugs already taken by `base` or `base-N`, to pick the next free suffix.
SELECT slug
  FROM categories
 WHERE slug = :base
    OR slug ~ ('^' || :base || '-[0-9]+$');

-- name: update_category(id, name, description)^
-- Partial update: a NULL parameter keeps the column; the slug never changes.
UPDATE categories
   SET name        = coalesce(:name, name),
       description = coalesce(:description, description),
       updated_at  = now()
 WHERE id = :id
 RETURNING id, name, slug, description,
           api_time(created_at) AS created_at, api_time(updated_at) AS updated_at;

-- name: category_has_products(id)$
-- A category still holding products (active or not) cannot be deleted.
SELECT EXISTS (SELECT 1 FROM products WHERE category_id = :id);

-- name: delete_category(id)!
-- Removes an empty category.
DELETE FROM categories WHERE id = :id;

-- ------------------------------------------------------------------ products

-- name: get_product(id, currency)^
-- The public product by id (active or not: the service decides who may see it).
SELECT d.*, :currency::text AS currency
  FROM product_documents d
 WHERE d.id = :id;

-- name: get_product_for_update(id, currency)^
-- The public product, row-locked: If-Match and the stock delta are checked against it.
SELECT p.id, p.name, p.description, p.price_cents, :currency::text AS currency,
       p.stock, p.image_url,
       json_build_object('id', c.id, 'name', c.name) AS category,
       p.is_active, api_time(p.created_at) AS created_at, api_time(p.updated_at) AS updated_at
  FROM products p
  JOIN categories c ON c.id = p.category_id
 WHERE p.id = :id
   FOR UPDATE OF p;

-- name: update_product(id, currency, name, description, price_cents, stock, set_image_url, image_url, category_id, is_active)^
-- Partial update: a NULL parameter keeps the column (image_url may be set to NULL on purpose).
WITH updated AS (
    UPDATE products
       SET name        = coalesce(:name, name),
           description = coalesce(:description, description),
           price_cents = coalesce(:price_cents, price_cents),
           stock       = coalesce(:stock, stock),
           image_url   = CASE WHEN :set_image_url::boolean THEN :image_url ELSE image_url END,
           category_id = coalesce(:category_id, category_id),
           is_active   = coalesce(:is_active, is_active),
           updated_at  = now()
     WHERE id = :id
 RETURNING *
)
SELECT u.id, u.name, u.description, u.price_cents, :currency::text AS currency,
       u.stock, u.image_url,
       json_build_object('id', c.id, 'name', c.name) AS category,
       u.is_active, api_time(u.created_at) AS created_at, api_time(u.updated_at) AS updated_at
  FROM updated u
  JOIN categories c ON c.id = u.category_id;

-- name: product_in_orders(id)$
-- A product that appears in an order is deactivated instead of deleted: history stays whole.
SELECT EXISTS (SELECT 1 FROM order_items WHERE product_id = :id);

-- name: deactivate_product(id)!
-- DELETE of a product that was ordered: it leaves the public catalog, its rows stay.
UPDATE products
   SET is_active = false,
       updated_at = now()
 WHERE id = :id;

-- name: delete_product(id)!
-- Removes a never-ordered product (its ledger rows go with it).
DELETE FROM products WHERE id = :id;

-- Product list pages: one block per sort, so each ORDER BY can walk its index. Each takes the
-- same filters, a keyset position (after_key, after_id: NULL for offset pages) and
-- LIMIT/OFFSET; the caller asks for per_page + 1 rows to learn whether a next page exists.
-- The page is cut from products alone, and only its rows are joined and formatted.

-- name: list_products_by_created_at(currency, include_inactive, category_id, min_price, max_price, in_stock, q, prefix, after_key, after_id, limit, offset)
-- Catalog page oldest first; ties broken by id in the same direction.
SELECT d.*, :currency::text AS currency
  FROM (SELECT p.id, p.created_at AS sort_key
          FROM catalog_products(:include_inactive, :category_id, :min_price, :max_price,
                                :in_stock, :q, :prefix) p
         WHERE :after_id::bigint IS NULL OR (p.created_at, p.id) > (:after_key::timestamptz, :after_id)
         ORDER BY p.created_at, p.id
         LIMIT :limit OFFSET :offset) page
  JOIN product_documents d USING (id)
 ORDER BY page.sort_key, page.id;

-- name: list_products_by_created_at_desc(currency, include_inactive, category_id, min_price, max_price, in_stock, q, prefix, after_key, after_id, limit, offset)
-- Catalog page newest first (the default); ties broken by id in the same direction.
SELECT d.*, :currency::text AS currency
  FROM (SELECT p.id, p.created_at AS sort_key
          FROM catalog_products(:include_inactive, :category_id, :min_price, :max_price,
                                :in_stock, :q, :prefix) p
         WHERE :after_id::bigint IS NULL OR (p.created_at, p.id) < (:after_key::timestamptz, :after_id)
         ORDER BY p.created_at DESC, p.id DESC
         LIMIT :limit OFFSET :offset) page
  JOIN product_documents d USING (id)
 ORDER BY page.sort_key DESC, page.id DESC;

-- name: list_products_by_price(currency, include_inactive, category_id, min_price, max_price, in_stock, q, prefix, after_key, after_id, limit, offset)
-- Catalog page cheapest first; ties broken by id in the same direction.
SELECT d.*, :currency::text AS currency
  FROM (SELECT p.id, p.price_cents AS sort_key
          FROM catalog_products(:include_inactive, :category_id, :min_price, :max_price,
                                :in_stock, :q, :prefix) p
         WHERE :after_id::bigint IS NULL OR (p.price_cents, p.id) > (:after_key::bigint, :after_id)
         ORDER BY p.price_cents, p.id
         LIMIT :limit OFFSET :offset) page
  JOIN product_documents d USING (id)
 ORDER BY page.sort_key, page.id;

-- name: list_products_by_price_desc(currency, include_inactive, category_id, min_price, max_price, in_stock, q, prefix, after_key, after_id, limit, offset)
-- Catalog page dearest first; ties broken by id in the same direction.
SELECT d.*, :currency::text AS currency
  FROM (SELECT p.id, p.price_cents AS sort_key
          FROM catalog_products(:include_inactive, :category_id, :min_price, :max_price,
                                :in_stock, :q, :prefix) p
         WHERE :after_id::bigint IS NULL OR (p.price_cents, p.id) < (:after_key::bigint, :after_id)
         ORDER BY p.price_cents DESC, p.id DESC
         LIMIT :limit OFFSET :offset) page
  JOIN product_documents d USING (id)
 ORDER BY page.sort_key DESC, page.id DESC;

-- name: list_products_by_name(currency, include_inactive, category_id, min_price, max_price, in_stock, q, prefix, after_key, after_id, limit, offset)
-- Catalog page by name A-Z, case-insensitive; ties broken by id in the same direction.
SELECT d.*, :currency::text AS currency
  FROM (SELECT p.id, lower(p.name) AS sort_key
          FROM catalog_products(:include_inactive, :category_id, :min_price, :max_price,
                                :in_stock, :q, :prefix) p
         WHERE :after_id::bigint IS NULL OR (lower(p.name), p.id) > (lower(:after_key::text), :after_id)
         ORDER BY lower(p.name), p.id
         LIMIT :limit OFFSET :offset) page
  JOIN product_documents d USING (id)
 ORDER BY page.sort_key, page.id;

-- name: list_products_by_name_desc(currency, include_inactive, category_id, min_price, max_price, in_stock, q, prefix, after_key, after_id, limit, offset)
-- Catalog page by name Z-A, case-insensitive; ties broken by id in the same direction.
SELECT d.*, :currency::text AS currency
  FROM (SELECT p.id, lower(p.name) AS sort_key
          FROM catalog_products(:include_inactive, :category_id, :min_price, :max_price,
                                :in_stock, :q, :prefix) p
         WHERE :after_id::bigint IS NULL OR (lower(p.name), p.id) < (lower(:after_key::text), :after_id)
         ORDER BY lower(p.name) DESC, p.id DESC
         LIMIT :limit OFFSET :offset) page
  JOIN product_documents d USING (id)
 ORDER BY page.sort_key DESC, page.id DESC;

-- name: list_products_by_relevance(currency, include_inactive, category_id, min_price, max_price, in_stock, q, prefix, candidates, after_key, after_id, limit, offset)
-- Search results best match first (`q` without an explicit sort); prefix-only matches rank last.
-- Only the newest `candidates` matches are ranked, so a word in every product costs as much as
-- a rarer one (docs/query-plans.md): PostgreSQL either walks the created_at index until it has
-- them or, for a rare word, sorts the GIN matches. Each row carries the number of ranked
-- candidates (`matches`: the total, whether or not a cursor narrows the page).
SELECT d.*, :currency::text AS currency, page.sort_key, page.matches
  FROM (SELECT ranked.id, ranked.sort_key, ranked.matches
          FROM (SELECT c.id, ts_rank(c.search, websearch_to_tsquery('english', :q)) AS sort_key,
                       count(*) OVER () AS matches
                  FROM (SELECT p.id, p.search
                          FROM catalog_products(:include_inactive, :category_id, :min_price,
                                                :max_price, :in_stock, :q, :prefix) p
                         ORDER BY p.created_at DESC, p.id DESC
                         LIMIT :candidates) c) ranked
         WHERE :after_id::bigint IS NULL
            OR (ranked.sort_key, ranked.id) < (:after_key::real, :after_id)
         ORDER BY ranked.sort_key DESC, ranked.id DESC
         LIMIT :limit OFFSET :offset) page
  JOIN product_documents d USING (id)
 ORDER BY page.sort_key DESC, page.id DESC;

-- name: count_products(include_inactive, category_id, min_price, max_price, in_stock, q, prefix, cap)$
-- The `total` of a list answer, counted up to `cap` matches (a count of every product walks
-- them all): the caller shows an estimate past it (estimate_products).
SELECT count(*)
  FROM (SELECT 1
          FROM catalog_products(:include_inactive, :category_id, :min_price, :max_price,
                                :in_stock, :q, :prefix)
         LIMIT :cap) capped;

-- name: estimate_products(include_inactive, category_id, min_price, max_price, in_stock, q, prefix)$
-- The planner's estimate of the matches (planning only, no row read), as EXPLAIN's JSON.
EXPLAIN (FORMAT JSON)
SELECT 1
  FROM catalog_products(:include_inactive, :category_id, :min_price, :max_price,
                        :in_stock, :q, :prefix);

-- ------------------------------------------------------------ stock ledger

-- name: list_stock_movements(product_id, limit, offset)
-- A product's ledger, oldest first; total rides on every row.
SELECT id, product_id, delta, reason, order_id, by_user_id, api_time(at) AS at,
       count(*) OVER () AS total
  FROM stock_movements
 WHERE product_id = :product_id
 ORDER BY id
 LIMIT :limit OFFSET :offset;

-- name: count_stock_movements(product_id)^
-- For an empty page: does the product exist, and how many movements has it.
SELECT EXISTS (SELECT 1 FROM products WHERE id = :product_id) AS product_exists,
       (SELECT count(*) FROM stock_movements WHERE product_id = :product_id) AS total;
