-- The order document (an order with its lines and its status history), written once.
-- depends: 0005_catalog_views

-- get_order, list_orders and change_order_status read this instead of each building the same
-- json_build_object/json_agg arrays. A simple view is flattened by the planner: filtered by id,
-- or joined to a page of ids, it reads orders by primary key, and the two arrays are scalar
-- subqueries (order_items by its primary key, order_status_history by (order_id, id)) run
-- only for the rows returned. Lines by product id, status history oldest first.
-- Like any table it shows a statement's snapshot: rows written by the same statement (data-
-- modifying CTEs in place_order and change_order_status) are not in it.
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
