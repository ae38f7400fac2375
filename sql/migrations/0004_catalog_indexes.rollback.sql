-- Back to the indexes of 0002_catalog.
DROP INDEX products_created_idx;
DROP INDEX products_active_lower_name_idx;
CREATE INDEX products_active_name_idx ON products (name, id) WHERE is_active;
