-- the view loses its appended columns (CREATE OR REPLACE cannot drop columns)
DROP VIEW order_documents;
CREATE VIEW order_documents AS
SELECT o.id, o.user_id, o.status, o.total_cents, o.currency,
       api_time(o.created_at) AS created_at, api_time(o.updated_at) AS updated_at,
       (SELECT json_agg(json_build_object(
                   'product_id', i.product_id, 'name', i.name, 'quantity', i.quantity,
                   'unit_price_cents', i.unit_price_cents,
                   'line_total_cents', i.line_total_cents)
               ORDER BY i.product_id)
          FROM order_items i
         WHERE i.order_id = o.id) AS items,
       (SELECT json_agg(json_build_object(
                   'status', h.status, 'at', api_time(h.at), 'by_user_id', h.by_user_id)
               ORDER BY h.id)
          FROM order_status_history h
         WHERE h.order_id = o.id) AS status_history
  FROM orders o;
DROP FUNCTION order_shipment(bigint, jsonb, bigint, bigint);
ALTER TABLE orders
    DROP COLUMN pending_slot,
    DROP COLUMN subtotal_cents,
    DROP COLUMN shipping_cents,
    DROP COLUMN shipping_address,
    DROP COLUMN shipping_method_id,
    DROP COLUMN shipping_method_name,
    DROP COLUMN payment_provider,
    DROP COLUMN payment_status,
    DROP COLUMN expires_at;
DROP TABLE cart_items;
DROP TABLE carts;
DROP TABLE shipping_methods;
DROP TABLE addresses;
