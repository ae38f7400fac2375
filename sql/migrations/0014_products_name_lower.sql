-- The name-prefix half of the catalog search (`lower(name) LIKE 'lamp%'`, so "ke" finds a
-- Kettle) was computed for every product a ranked search walks past: for a word in 5 % of
-- 100,000 products, ~5,700 lower() calls, 60 % of the statement's time (docs/query-plans.md).
-- The lowered name is now stored once per write of the name (a generated column is recomputed
-- only when `name` changes, so the stock updates of orders never touch it) and the filter
-- compares it as it is; its prefix index replaces the expression index.
-- Adding a stored column rewrites the table under an exclusive lock: seconds for 100,000 rows.
-- depends: 0013_text_match_cost

ALTER TABLE products ADD COLUMN name_lower text GENERATED ALWAYS AS (lower(name)) STORED;
CREATE INDEX products_name_lower_prefix_idx ON products (name_lower text_pattern_ops);
DROP INDEX products_name_lower_idx;

CREATE OR REPLACE FUNCTION catalog_products(
    _include_inactive boolean, _category_id bigint, _min_price bigint, _max_price bigint,
    _in_stock boolean, _q text, _prefix text
) RETURNS SETOF products
  LANGUAGE sql STABLE
AS $$
    SELECT p.*
      FROM products p
     WHERE (p.is_active OR _include_inactive)
       AND (_category_id IS NULL OR p.category_id = _category_id)
       AND (_min_price IS NULL OR p.price_cents >= _min_price)
       AND (_max_price IS NULL OR p.price_cents <= _max_price)
       AND (NOT _in_stock OR p.stock > 0)
       AND (_q IS NULL
            OR p.search @@ websearch_to_tsquery('english', _q)
            OR p.name_lower LIKE _prefix)
$$;
