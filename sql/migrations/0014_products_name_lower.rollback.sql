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
            OR lower(p.name) LIKE _prefix)
$$;
CREATE INDEX products_name_lower_idx ON products (lower(name) text_pattern_ops);
ALTER TABLE products DROP COLUMN name_lower;  -- drops products_name_lower_prefix_idx with it
