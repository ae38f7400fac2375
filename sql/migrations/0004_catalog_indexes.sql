-- Catalog list indexes tuned from EXPLAIN ANALYZE on 100,000 products (docs/query-plans.md).
-- depends: 0003_orders

-- sort=name is case-insensitive (lower(name), id); the plain (name, id) index served no query
DROP INDEX products_active_name_idx;
CREATE INDEX products_active_lower_name_idx ON products (lower(name), id) WHERE is_active;
-- staff lists with include_inactive=true (default sort) walk this instead of sorting the table
CREATE INDEX products_created_idx ON products (created_at, id);
