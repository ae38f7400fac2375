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
