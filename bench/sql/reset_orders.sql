-- Reset before an order run (bin/bench): every product back to 1000 in stock, no orders.
-- A bare `UPDATE products SET stock = 1000` would break the ledger invariant (the sum of a
-- product's stock_movements equals its stock, `shopapi check-ledger`), so the ledger is
-- reset with it: orders and everything hanging off them are truncated, and each product
-- gets a single opening `adjust` movement for its new stock.
BEGIN;
-- The outbox (events) goes too: no worker relays it during a bench, and the rows every order
-- run leaves (about 10 k per round) would otherwise pile up run after run (370 k rows, 339 MB
-- seen) and slow later runs down, an unfair handicap for whichever code is measured last.
TRUNCATE payments, order_status_history, order_items, orders, idempotency_keys, stock_movements,
         webhook_deliveries, sent_emails, events
         RESTART IDENTITY;
UPDATE products SET stock = :stock;
INSERT INTO stock_movements (product_id, delta, reason)
SELECT id, stock, 'adjust'
  FROM products
 WHERE stock > 0;
COMMIT;
