-- Merchant webhooks (ADMIN) and their delivery log.

-- name: lock_webhooks_for_create()!
-- Taken first in the transaction of a create: two admins racing for the last slot cannot
-- both pass the count below (the lock conflicts with itself and with other writes to
-- webhooks; reads and the worker's delivery log go on).
LOCK TABLE webhooks IN SHARE ROW EXCLUSIVE MODE;

-- name: create_webhook(url, events, is_active, secret, max_webhooks)^
-- A new subscription, refused (no row) when max_webhooks exist already (after the lock).
INSERT INTO webhooks (url, events, is_active, secret)
SELECT :url, :events::text[], :is_active, :secret
 WHERE (SELECT count(*) FROM webhooks) < :max_webhooks
RETURNING id, url, events, is_active, api_time(created_at) AS created_at, secret;

-- name: list_webhooks(limit, offset)
-- Oldest first (by id); the secret is never listed.
SELECT id, url, events, is_active, api_time(created_at) AS created_at
  FROM webhooks
 ORDER BY id
 LIMIT :limit OFFSET :offset;

-- name: count_webhooks()$
SELECT count(*) FROM webhooks;

-- name: get_webhook(id)^
SELECT id, url, events, is_active, api_time(created_at) AS created_at
  FROM webhooks
 WHERE id = :id;

-- name: update_webhook(id, url, events, is_active)^
-- Partial update: a NULL parameter keeps the column.
UPDATE webhooks
   SET url        = coalesce(:url, url),
       events     = coalesce(:events::text[], events),
       is_active  = coalesce(:is_active::boolean, is_active),
       updated_at = now()
 WHERE id = :id
RETURNING id, url, events, is_active, api_time(created_at) AS created_at;

-- name: delete_webhook(id)$
-- Removes a subscription and its delivery log; NULL when there was none.
DELETE FROM webhooks WHERE id = :id RETURNING id;

-- name: get_delivery(webhook_id, event_id)^
-- What one delivery attempt needs: the target and the event. No row: the webhook or the event
-- is gone; is_active false: the webhook was switched off after the event was relayed.
SELECT w.url, w.secret, w.is_active,
       e.id::text AS event_id, e.type, api_time(e.created_at) AS created_at, e.data
  FROM webhooks w
  JOIN events e ON e.id = :event_id::uuid
 WHERE w.id = :webhook_id;

-- name: record_delivery(webhook_id, event_id, event_type, attempt, status_code, error, duration_ms, next_attempt_at)!
-- One attempt in the delivery log.
INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, attempt, status_code, error,
                                duration_ms, next_attempt_at)
VALUES (:webhook_id, :event_id::uuid, :event_type, :attempt, :status_code, :error,
        :duration_ms, :next_attempt_at);

-- name: list_deliveries(webhook_id, limit, offset)
-- Newest first, by page.
SELECT id, event_id::text AS event_id, event_type, attempt, status_code, error, duration_ms,
       api_time(delivered_at) AS delivered_at, api_time(next_attempt_at) AS next_attempt_at
  FROM webhook_deliveries
 WHERE webhook_id = :webhook_id
 ORDER BY id DESC
 LIMIT :limit OFFSET :offset;

-- name: count_deliveries(webhook_id)$
SELECT count(*) FROM webhook_deliveries WHERE webhook_id = :webhook_id;

-- name: redeliver(webhook_id, delivery_id)$
-- Defers a new delivery series of the event of one logged attempt; NULL when the attempt is
-- not in this webhook's log.
SELECT procrastinate_defer_jobs_v1(ARRAY[
           ROW('webhooks', 'deliver_webhook', 0, NULL, NULL,
               jsonb_build_object('event_id', d.event_id, 'webhook_id', d.webhook_id),
               NULL)::procrastinate_job_to_defer_v1])
  FROM webhook_deliveries d
 WHERE d.id = :delivery_id
   AND d.webhook_id = :webhook_id;
