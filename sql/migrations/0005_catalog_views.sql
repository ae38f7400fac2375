-- The catalog's list filter and public product shape, each written once.
-- depends: 0004_catalog_indexes

-- Every product list (one query per sort, so each ORDER BY walks its index) and the count
-- filter through this. A single-SELECT SQL function is inlined by the planner: plans are the
-- same as with the conditions written out in each query (docs/query-plans.md).
CREATE FUNCTION catalog_products(
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

-- A product as the API shows it (the store currency is added by each query).
CREATE VIEW product_documents AS
SELECT p.id, p.name, p.description, p.price_cents, p.stock, p.image_url,
       json_build_object('id', c.id, 'name', c.name) AS category,
       p.is_active, api_time(p.created_at) AS created_at, api_time(p.updated_at) AS updated_at
  FROM products p
  JOIN categories c ON c.id = p.category_id;
