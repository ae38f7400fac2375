-- Reset before an order run (bin/bench): every product back to 1000 in stock, no orders.
-- A bare `UPDATE products SET stock = 1000` would break the ledger invariant (the sum of a
-- product's stock_movements equals its stock, `shopapi check-ledger`), so the ledger is
-- reset with it: orders and everything hanging off them are truncated, and each product
-- gets a single opening `adjust` movement for its new stock.
BEGIN;
TRUNCATE payments, order_status_history, order_items, orders, idempotency_keys, stock_movements
         RESTART IDENTITY;
UPDATE products SET stock = :stock;
INSERT INTO stock_movements (product_id, delta, reason)
SELECT id, stock, 'adjust'
  FROM products
 WHERE stock > 0;
COMMIT;
