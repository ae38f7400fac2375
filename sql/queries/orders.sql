-- Orders: placement, reads, status changes, deletion, idempotency keys and the ledger check.
-- Writes are single statements (data-modifying CTEs): one statement is one transaction and
-- one round trip. Products are always locked in id order (SELECT ... ORDER BY id FOR UPDATE)
-- so concurrent orders and cancellations over the same products cannot deadlock.
-- Order documents (items by product id, status history oldest first) come from the view
-- order_documents (migration 0006); only place_order builds its own, see there.

-- name: place_order(user_id, currency, product_ids, quantities, address, address_id, shipping_method_id, max_pending, payment_provider, payment_timeout, idempotency_key, request_hash)^
-- Places an order all-or-nothing, or replays the answer stored under its Idempotency-Key.
-- POST /api/orders and the cart checkout both come here (the checkout passes its cart's
-- lines). When the order cannot be placed nothing is written and the last columns say why.
-- Its events (order.created, product.out_of_stock) are inserted by the same statement.
-- Its document is built from the CTE rows, not read from order_documents: the order, its
-- lines and its history are inserted by this same statement, and a view (like any table)
-- only shows the statement's snapshot, taken before them. It is the same document as
-- order_documents gives for the order (same keys and arrays; history has one entry here).
WITH wanted AS (
    -- the request's lines, numbered as sent
    SELECT product_id, quantity, line
      FROM unnest(:product_ids::bigint[], :quantities::integer[])
           WITH ORDINALITY AS w (product_id, quantity, line)
),
earlier AS (
    -- the same user already used this key: change nothing, the caller replays (or refuses)
    SELECT request_hash, convert_from(response, 'UTF8') AS order_json
      FROM idempotency_keys
     WHERE user_id = :user_id::bigint
       AND key = :idempotency_key::text
),
shipment AS (
    -- where it goes and the locked method's price (migration 0010: order_shipment); not
    -- called at all for an order without a shipment
    SELECT *
      FROM order_shipment(:user_id::bigint, :address::jsonb, :address_id::bigint,
                          :shipping_method_id::bigint)
     WHERE :address::jsonb IS NOT NULL
        OR :address_id::bigint IS NOT NULL
),
slot AS (
    -- MAX_PENDING_ORDERS (:max_pending; 0: no limit, no slot): a free pending slot of the
    -- buyer's, none when every one is held (migration 0010: orders_pending_slot_key). Any
    -- free one will do (no ORDER BY: the first probe that finds one stops the scan, and the
    -- generic plan stays cheap enough for PostgreSQL to keep it)
    SELECT n AS slot
      FROM generate_series(1, :max_pending::integer) n
     WHERE NOT EXISTS (SELECT FROM orders o
                        WHERE o.user_id = :user_id::bigint
                          AND o.pending_slot = n)
     LIMIT 1
),
admitted AS (
    -- what needs no product: no earlier answer, a shipment that can go, a free slot
    SELECT NOT EXISTS (SELECT FROM earlier)
           AND NOT EXISTS (SELECT FROM shipment WHERE refused IS NOT NULL)
           AND (:max_pending::integer = 0 OR EXISTS (SELECT FROM slot)) AS ok
),
locked AS (
    -- lock every product of the order in id order; in READ COMMITTED each row comes back
    -- as its latest committed version, so stock and price are current
    SELECT p.id, p.name, p.price_cents, p.stock, p.is_active, w.quantity, w.line
      FROM products p
      JOIN wanted w ON w.product_id = p.id
     WHERE (SELECT ok FROM admitted)
     ORDER BY p.id
       FOR UPDATE OF p
),
verdict AS (
    -- all or nothing: every line names an active product that has the quantity in stock
    SELECT count(*) = (SELECT count(*) FROM wanted)
           AND coalesce(bool_and(is_active AND stock >= quantity), false) AS ok
      FROM locked
),
reserved AS (
    -- the deduction, guarded by the locked (latest) row. This UPDATE finds its rows in the
    -- statement's snapshot, which can predate the locks, and PostgreSQL evaluates the WHERE
    -- and CHECK (stock >= 0) on that older row before moving on to the latest version: the
    -- textbook `SET stock = p.stock - q WHERE p.stock >= q` could skip a line the verdict
    -- accepted (half an order) or fail the CHECK. l.stock is current and stays so (locked).
    UPDATE products p
       SET stock      = l.stock - l.quantity,
           updated_at = now()
      FROM locked l
     WHERE p.id = l.id
       AND l.is_active
       AND l.stock >= l.quantity
       AND (SELECT ok FROM verdict)
 RETURNING l.id AS product_id, l.name, l.price_cents AS unit_price_cents, l.quantity
),
new_order AS (
    -- the subtotal comes from the prices just locked, never from the client; a partial
    -- reservation (ruled out by the verdict) gives a NULL total and aborts everything.
    -- Shipping is the locked method's price, 0 without one or from its free threshold on;
    -- subtotal_cents is derived (total_cents - shipping_cents). The unpaid order expires
    -- (the worker cancels it) ORDER_PAYMENT_TIMEOUT seconds after creation.
    INSERT INTO orders (user_id, shipping_cents, total_cents, currency,
                        shipping_address, shipping_method_id, shipping_method_name,
                        pending_slot, payment_provider, expires_at)
    SELECT :user_id::bigint, s.shipping, t.subtotal + s.shipping, :currency::text,
           m.address, m.method_id, m.method_name, (SELECT slot FROM slot),
           -- PAYMENT_PROVIDER, and ORDER_PAYMENT_TIMEOUT (0: an unpaid order never expires)
           :payment_provider::text,
           CASE WHEN :payment_timeout::integer > 0
                THEN now() + make_interval(secs => :payment_timeout::integer) END
      FROM (SELECT CASE WHEN count(*) = (SELECT count(*) FROM wanted)
                        THEN sum(unit_price_cents * quantity) END AS subtotal
              FROM reserved
            HAVING count(*) > 0) t
      LEFT JOIN shipment m ON true
     CROSS JOIN LATERAL (
            SELECT CASE WHEN m.method_id IS NULL OR t.subtotal >= m.free_over_cents THEN 0
                        ELSE m.price_cents END AS shipping) s
 RETURNING id, user_id, status, subtotal_cents, shipping_cents, total_cents, currency,
           shipping_address, shipping_method_id, shipping_method_name, payment_provider,
           payment_status, expires_at, created_at, updated_at
),
items AS (
    -- name and unit price copied at purchase time
    INSERT INTO order_items (order_id, product_id, name, unit_price_cents, quantity)
    SELECT o.id, r.product_id, r.name, r.unit_price_cents, r.quantity
      FROM new_order o
     CROSS JOIN reserved r
 RETURNING product_id, name, quantity, unit_price_cents, line_total_cents
),
movements AS (
    -- the ledger: stock left for this order, by the buyer
    INSERT INTO stock_movements (product_id, delta, reason, order_id, by_user_id)
    SELECT r.product_id, -r.quantity, 'order', o.id, o.user_id
      FROM new_order o
     CROSS JOIN reserved r
),
history AS (
    -- the audit trail starts with pending, at creation, by the buyer
    INSERT INTO order_status_history (order_id, status, by_user_id, at)
    SELECT id, status, user_id, created_at
      FROM new_order
 RETURNING status, by_user_id, at
),
document AS (
    -- the 201 answer, built once so that a replay answers exactly the same order
    SELECT o.id,
           json_build_object(
               'id',               o.id,
               'user_id',          o.user_id,
               'status',           o.status,
               'items',            (SELECT json_agg(json_build_object(
                                               'product_id',       i.product_id,
                                               'name',             i.name,
                                               'quantity',         i.quantity,
                                               'unit_price_cents', i.unit_price_cents,
                                               'line_total_cents', i.line_total_cents)
                                           ORDER BY i.product_id)
                                      FROM items i),
               'total_cents',      o.total_cents,
               'currency',         o.currency,
               'status_history',   (SELECT json_agg(json_build_object(
                                               'status',     h.status,
                                               'at',         api_time(h.at),
                                               'by_user_id', h.by_user_id))
                                      FROM history h),
               'created_at',       api_time(o.created_at),
               'updated_at',       api_time(o.updated_at),
               'subtotal_cents',   o.subtotal_cents,
               'shipping_cents',   o.shipping_cents,
               'shipping_address', o.shipping_address,
               'shipping_method',  CASE WHEN o.shipping_method_id IS NOT NULL
                                        THEN json_build_object('id', o.shipping_method_id,
                                                               'name', o.shipping_method_name)
                                   END,
               'payment',          json_build_object('provider', o.payment_provider,
                                                     'status', o.payment_status),
               'expires_at',       api_time(o.expires_at)
           ) AS doc
      FROM new_order o
),
created_event AS (
    -- the outbox: the event commits with the order or not at all (events.sql relays it);
    -- it nests the document as built (json, never re-parsed from text)
    INSERT INTO events (type, data)
    SELECT 'order.created', json_build_object('order', doc)
      FROM document
),
sold_out_events AS (
    -- a line that took a product's last units
    INSERT INTO events (type, data)
    SELECT 'product.out_of_stock',
           json_build_object('product', json_build_object('id', l.id, 'name', l.name,
                                                          'stock', 0))
      FROM reserved r
      JOIN locked l ON l.id = r.product_id
     WHERE l.stock = l.quantity
),
remembered AS (
    -- the key is stored with the stock change, in the same transaction, only on success
    INSERT INTO idempotency_keys (user_id, key, request_hash, order_id, response)
    SELECT :user_id::bigint, :idempotency_key::text, :request_hash::bytea, id,
           convert_to(doc::text, 'UTF8')
      FROM document
     WHERE :idempotency_key::text IS NOT NULL
)
SELECT (SELECT doc::text FROM document)    AS order_json,
       (SELECT request_hash FROM earlier)  AS earlier_hash,
       (SELECT order_json FROM earlier)    AS earlier_order_json,
       -- why nothing was written: the shipment refused ('address', 'method', 'country') ...
       (SELECT refused FROM shipment)       AS shipment_refused,
       -- ... the buyer holds every pending slot ...
       NOT (SELECT ok FROM admitted)        AS not_admitted,
       -- ... the first line naming an unknown or inactive product ...
       (SELECT min(w.line)
          FROM wanted w
          LEFT JOIN locked l ON l.id = w.product_id
         WHERE l.id IS NULL OR NOT l.is_active) AS unavailable_line,
       -- ... or the first line short of stock
       (SELECT json_build_object('line', line, 'product_id', id,
                                 'requested', quantity, 'available', stock)
          FROM locked
         WHERE stock < quantity
         ORDER BY line
         LIMIT 1)                            AS short_line;

-- name: get_idempotent_answer(user_id, idempotency_key)^
-- A key stored by a concurrent request that committed first: replay it or refuse it.
SELECT request_hash, convert_from(response, 'UTF8') AS order_json
  FROM idempotency_keys
 WHERE user_id = :user_id::bigint
   AND key = :idempotency_key::text;

-- name: delete_expired_idempotency_keys(older_than_seconds)!
-- Housekeeping (shopapi purge-idempotency-keys): keys are kept for the retention window only.
DELETE FROM idempotency_keys
 WHERE created_at < now() - make_interval(secs => :older_than_seconds);

-- name: get_order(id)^
-- One order with its lines and its status history, in one query.
SELECT d.*
  FROM order_documents d
 WHERE d.id = :id;

-- name: list_orders(user_id, status, after_created_at, after_id, limit, offset)
-- Newest first, filters optional, keyset (after_*) or offset paging; lines and history come
-- with each order in this same query (no query per order). The page is cut from orders alone
-- (index order, skipped offset rows are never formatted), then joined to its documents.
SELECT d.*
  FROM (SELECT o.id, o.created_at
          FROM orders o
         WHERE (:user_id::bigint IS NULL OR o.user_id = :user_id)
           AND (:status::text IS NULL OR o.status = :status)
           AND (:after_id::bigint IS NULL
                OR (o.created_at, o.id) < (:after_created_at::timestamptz, :after_id))
         ORDER BY o.created_at DESC, o.id DESC
         LIMIT :limit OFFSET :offset) page
  JOIN order_documents d USING (id)
 ORDER BY page.created_at DESC, page.id DESC;

-- name: count_orders(user_id, status)$
-- The total of a list answer (the same filters, without paging).
SELECT count(*)
  FROM orders
 WHERE (:user_id::bigint IS NULL OR user_id = :user_id)
   AND (:status::text IS NULL OR status = :status);

-- name: get_order_state(id)^
-- Why a status change matched no row: unknown order, someone else's, or a refused move.
SELECT user_id, status
  FROM orders
 WHERE id = :id;

-- name: change_order_status(id, status, from_statuses, owner_id, by_user_id, payment_status)^
-- Moves an order only from a state allowed to reach :status (so of two racing cancels one
-- wins and stock goes back exactly once); cancelling gives the stock back to the ledger.
-- :owner_id restricts the move to the owner's order (self-service cancel). No row: no move.
-- :payment_status, when not NULL, is the order's payment status with the move (a provider's
-- payment that succeeded makes the order paid in this one statement).
-- The order.status_changed event ({order, from, to}) is inserted by this same statement, and
-- so is the refund job of a cancelled order whose online payment succeeded.
-- The answer takes its lines from order_documents (this statement does not change them) but
-- status, updated_at and the new history entry from the CTEs: the view shows the snapshot
-- taken before this UPDATE and INSERT, i.e. the old status and the trail without the move.
WITH current AS (
    -- the order as it is now (FOR UPDATE waits for a racing move and re-reads the row), so
    -- `from` is the status actually left, not the one in this statement's snapshot
    SELECT id, status
      FROM orders
     WHERE id = :id
       AND status = ANY(:from_statuses::text[])
       AND (:owner_id::bigint IS NULL OR user_id = :owner_id)
       FOR UPDATE
),
moved AS (
    UPDATE orders o
       SET status         = :status,
           -- leaving pending gives the MAX_PENDING_ORDERS slot back
           pending_slot   = NULL,
           payment_status = coalesce(:payment_status::text, o.payment_status),
           updated_at     = now()
      FROM current c
     WHERE o.id = c.id
 RETURNING o.id, o.user_id, o.status, o.total_cents, o.currency, o.created_at, o.updated_at,
           o.payment_provider, o.payment_status, c.status AS from_status
),
refund AS (
    -- cancelling an order paid online gives the money back: the refund job (the worker asks
    -- the provider; payments.sql: defer_refund) commits with the cancellation, or neither does
    SELECT procrastinate_defer_jobs_v1(ARRAY(
               SELECT ROW('payments', 'refund_payment', 0, 'refund-order-' || m.id, NULL,
                          jsonb_build_object('order_id', m.id),
                          NULL)::procrastinate_job_to_defer_v1
                 FROM moved m
                WHERE m.status = 'cancelled'
                  AND m.payment_provider = 'stripe'
                  AND m.payment_status = 'succeeded')) AS jobs
),
history AS (
    INSERT INTO order_status_history (order_id, status, by_user_id, at)
    SELECT id, status, :by_user_id::bigint, updated_at
      FROM moved
 RETURNING id, status, by_user_id, at
),
returned AS (
    -- a cancelled order's products, locked in id order like a placement locks them
    SELECT p.id, i.quantity
      FROM moved m
      JOIN order_items i ON i.order_id = m.id
      JOIN products p    ON p.id = i.product_id
     WHERE m.status = 'cancelled'
     ORDER BY p.id
       FOR UPDATE OF p
),
restocked AS (
    -- adding cannot fail on an older row version; PostgreSQL applies it to the latest one
    UPDATE products p
       SET stock      = p.stock + r.quantity,
           updated_at = now()
      FROM returned r
     WHERE p.id = r.id
 RETURNING p.id, r.quantity
),
movements AS (
    INSERT INTO stock_movements (product_id, delta, reason, order_id, by_user_id)
    SELECT r.id, r.quantity, 'cancel', m.id, :by_user_id::bigint
      FROM moved m
     CROSS JOIN restocked r
),
answer AS (
    SELECT m.id, m.user_id, m.status, m.total_cents, m.currency,
           api_time(m.created_at) AS created_at, api_time(m.updated_at) AS updated_at,
           d.items, d.subtotal_cents, d.shipping_cents, d.shipping_address, d.shipping_method,
           -- the payment as this UPDATE left it (the view shows it as it was before)
           json_build_object('provider', m.payment_provider,
                             'status', m.payment_status) AS payment,
           d.expires_at,
           -- the view's trail plus the entry just appended, last (not yet visible to this
           -- statement); json_array_elements keeps each json entry's text as it is. The new
           -- entry must keep the view's entry shape (0006_order_documents).
           (SELECT json_agg(t.entry ORDER BY t.n NULLS LAST)
              FROM (SELECT s.entry, s.n
                      FROM json_array_elements(d.status_history) WITH ORDINALITY AS s (entry, n)
                     UNION ALL
                    SELECT json_build_object(
                               'status', h.status, 'at', api_time(h.at),
                               'by_user_id', h.by_user_id),
                           NULL
                      FROM history h) t) AS status_history,
           m.from_status
      FROM moved m
      LEFT JOIN order_documents d ON d.id = m.id
),
changed_event AS (
    INSERT INTO events (type, data)
    SELECT 'order.status_changed',
           json_build_object(
               'order', json_build_object(
                   'id', a.id, 'user_id', a.user_id, 'status', a.status, 'items', a.items,
                   'total_cents', a.total_cents, 'currency', a.currency,
                   'status_history', a.status_history,
                   'created_at', a.created_at, 'updated_at', a.updated_at,
                   'subtotal_cents', a.subtotal_cents, 'shipping_cents', a.shipping_cents,
                   'shipping_address', a.shipping_address,
                   'shipping_method', a.shipping_method, 'payment', a.payment,
                   'expires_at', a.expires_at),
               'from', a.from_status,
               'to', a.status)
      FROM answer a
)
SELECT a.id, a.user_id, a.status, a.total_cents, a.currency, a.created_at, a.updated_at,
       a.items, a.status_history, a.subtotal_cents, a.shipping_cents, a.shipping_address,
       a.shipping_method, a.payment, a.expires_at,
       (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM restocked) AS restocked_ids,
       (SELECT coalesce(cardinality(jobs), 0) FROM refund)                AS refunds
  FROM answer a;

-- name: delete_order(id, by_user_id)^
-- Removes an order (lines and history cascade); one still holding stock (pending, paid)
-- gives it back first. The cancel movements keep the order id: the ledger outlives the order.
WITH doomed AS (
    DELETE FROM orders
     WHERE id = :id
 RETURNING id, status
),
returned AS (
    SELECT p.id, i.quantity
      FROM doomed d
      JOIN order_items i ON i.order_id = d.id
      JOIN products p    ON p.id = i.product_id
     WHERE d.status IN ('pending', 'paid')
     ORDER BY p.id
       FOR UPDATE OF p
),
restocked AS (
    UPDATE products p
       SET stock      = p.stock + r.quantity,
           updated_at = now()
      FROM returned r
     WHERE p.id = r.id
 RETURNING p.id, r.quantity
),
movements AS (
    INSERT INTO stock_movements (product_id, delta, reason, order_id, by_user_id)
    SELECT r.id, r.quantity, 'cancel', d.id, :by_user_id::bigint
      FROM doomed d
     CROSS JOIN restocked r
)
SELECT d.id,
       (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM restocked) AS restocked_ids
  FROM doomed d;

-- name: ledger_mismatches()
-- The ledger invariant (shopapi check-ledger): every product's stock equals the sum of its
-- movements. Any row returned is a bug.
SELECT p.id AS product_id, p.stock, coalesce(sum(m.delta), 0) AS ledger_stock
  FROM products p
  LEFT JOIN stock_movements m ON m.product_id = p.id
 GROUP BY p.id
HAVING p.stock <> coalesce(sum(m.delta), 0)
 ORDER BY p.id;
