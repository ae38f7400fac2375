-- Payments: starting an order's card payment, the provider's webhook events (each applied at
-- most once), refunds and the expiry of unpaid orders. The order's own moves (paid,
-- cancelled) go through orders.sql: change_order_status, with its history, ledger and event.

-- name: lock_order_for_payment(order_id, user_id)^
-- The buyer's order; the order row stays locked until the transaction ends, so a second start
-- of the same order waits here and then finds the first one's payment (started_payment: one
-- PaymentIntent per order).
SELECT id, status, total_cents, currency, payment_status,
       coalesce(expires_at <= now(), false) AS expired
  FROM orders
 WHERE id = :order_id
   AND user_id = :user_id
   FOR UPDATE;

-- name: started_payment(order_id)^
-- The order's payment, if one was started. A statement of its own, run once the order is
-- locked: it sees the payment a racing start committed while this one waited for the lock.
-- (Joined into the locking statement it would not: after the wait PostgreSQL re-reads only
-- the locked order row, the join keeps the snapshot taken before the wait, with no payment.)
SELECT intent_id, client_secret
  FROM payments
 WHERE order_id = :order_id;

-- name: record_payment(order_id, provider, intent_id, client_secret, amount_cents, currency)$
-- The payment just started with the provider; the order's payment is now processing.
WITH stored AS (
    INSERT INTO payments (order_id, provider, intent_id, client_secret, amount_cents, currency)
    VALUES (:order_id, :provider, :intent_id, :client_secret, :amount_cents, :currency)
)
UPDATE orders
   SET payment_provider = :provider,
       payment_status   = 'processing',
       updated_at       = now()
 WHERE id = :order_id
RETURNING payment_status;

-- name: restart_payment(order_id)$
-- The buyer tries again (the same PaymentIntent) after a failed attempt: processing again.
-- Answers the payment status as it now is.
WITH retried AS (
    UPDATE orders
       SET payment_status = 'processing',
           updated_at     = now()
     WHERE id = :order_id
       AND payment_status IN ('unpaid', 'failed')
 RETURNING payment_status
)
SELECT coalesce((SELECT payment_status FROM retried),
                (SELECT payment_status FROM orders WHERE id = :order_id));

-- name: claim_provider_event(event_id, type, intent_id)^
-- Claims a webhook event in the transaction that applies it, and locks the order its
-- PaymentIntent belongs to (against a racing cancel, expiry or start). `fresh` is false when
-- the event was applied already: a concurrent delivery of the same id waits on the primary
-- key, then finds it taken, and locks nothing. No order columns: an intent of no order of ours.
-- After waiting for the order lock PostgreSQL re-reads the order row, so status and
-- payment_status are the latest (the payment's amount and currency never change).
WITH claimed AS (
    INSERT INTO payment_events (event_id, type, intent_id)
    VALUES (:event_id, :type, :intent_id)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
),
payment AS (
    SELECT o.id AS order_id, o.status, o.payment_status, p.amount_cents, p.currency
      FROM payments p
      JOIN orders o ON o.id = p.order_id
     WHERE p.intent_id = :intent_id
       AND EXISTS (SELECT FROM claimed)
       FOR UPDATE OF o
)
SELECT EXISTS (SELECT FROM claimed) AS fresh, pay.*
  FROM (VALUES (1)) AS one (n)
  LEFT JOIN payment pay ON true;

-- name: set_payment_status(order_id, status, from_statuses)$
-- The order's payment moves, only from the statuses given (so an out-of-order or repeated
-- event cannot take a succeeded payment back to failed). NULL: it did not move.
UPDATE orders
   SET payment_status = :status,
       updated_at     = now()
 WHERE id = :order_id
   AND payment_status = ANY (:from_statuses::text[])
RETURNING payment_status;

-- name: record_payment_failed_event(order_id)!
-- order.payment_failed with the order as it is now (its payment just set to failed by the
-- previous statement of this transaction, which the view sees).
INSERT INTO events (type, data)
SELECT 'order.payment_failed', json_build_object('order', to_json(d))
  FROM order_documents d
 WHERE d.id = :order_id;

-- name: defer_refund(order_id)$
-- The refund job of an order (payments.refund_payment in the worker), deferred with the change
-- that needs it; the lock keeps two refund jobs of one order from ever running at once.
SELECT cardinality(procrastinate_defer_jobs_v1(ARRAY[
           ROW('payments', 'refund_payment', 0, 'refund-order-' || :order_id::bigint, NULL,
               jsonb_build_object('order_id', :order_id::bigint),
               NULL)::procrastinate_job_to_defer_v1]));

-- name: get_payment(order_id)^
-- What the refund job needs: the provider's payment and where the order's payment stands.
SELECT p.intent_id, p.refund_id, o.status, o.payment_status
  FROM payments p
  JOIN orders o ON o.id = p.order_id
 WHERE p.order_id = :order_id;

-- name: record_refund(order_id, refund_id, succeeded)$
-- The provider's refund of an order: kept with the payment, and the order's payment becomes
-- refunded once the provider says it went through (else its charge.refunded webhook will).
WITH kept AS (
    UPDATE payments
       SET refund_id = :refund_id
     WHERE order_id = :order_id
)
UPDATE orders
   SET payment_status = CASE WHEN :succeeded::boolean THEN 'refunded' ELSE payment_status END,
       updated_at     = now()
 WHERE id = :order_id
RETURNING payment_status;

-- name: expired_order_ids(limit)
-- Pending orders past their payment deadline (ORDER_PAYMENT_TIMEOUT), oldest first
-- (orders_payment_expiry_idx). Each is then cancelled by change_order_status, which only
-- moves it if it is still pending.
SELECT id
  FROM orders
 WHERE status = 'pending'
   AND expires_at IS NOT NULL
   AND expires_at <= now()
 ORDER BY expires_at
 LIMIT :limit;

-- name: delete_old_payment_events(older_than_seconds)!
-- Housekeeping: a webhook event id only needs remembering while the provider may redeliver it.
DELETE FROM payment_events
 WHERE received_at < now() - make_interval(secs => :older_than_seconds);
