-- Events (the outbox) and the jobs they become. Events are written by the statements that
-- cause them (orders.sql); the relay below turns them into procrastinate jobs.

-- name: relay_events(limit)^
-- Turns committed events into their jobs, exactly once: claims the oldest events not yet
-- relayed (SKIP LOCKED, so the relays of several workers share the queue), defers one email
-- job per order event and one delivery job per active webhook subscribed to the type, with
-- procrastinate's own defer function, and stamps the events relayed, all in this statement:
-- a relay killed half way has relayed nothing.
WITH batch AS (
    SELECT id
      FROM events
     WHERE relayed_at IS NULL
     ORDER BY created_at
     LIMIT :limit
       FOR UPDATE SKIP LOCKED
),
relayed AS (
    UPDATE events e
       SET relayed_at = now()
      FROM batch b
     WHERE e.id = b.id
 RETURNING e.id, e.type
),
jobs AS (
    SELECT ROW('emails', 'send_event_email', 0, NULL, NULL,
               jsonb_build_object('event_id', r.id), NULL)::procrastinate_job_to_defer_v1 AS job
      FROM relayed r
     WHERE starts_with(r.type, 'order.')  -- the buyer may be told (notifications.py decides)
     UNION ALL
    SELECT ROW('webhooks', 'deliver_webhook', 0, NULL, NULL,
               jsonb_build_object('event_id', r.id, 'webhook_id', w.id),
               NULL)::procrastinate_job_to_defer_v1
      FROM relayed r
      JOIN webhooks w ON w.is_active AND r.type = ANY (w.events)
),
deferred AS (
    SELECT cardinality(procrastinate_defer_jobs_v1(array_agg(job))) AS jobs
      FROM jobs
    HAVING count(*) > 0
)
SELECT (SELECT count(*) FROM relayed)                 AS events,
       coalesce((SELECT jobs FROM deferred), 0)       AS jobs;

-- name: record_out_of_stock(product_id, name)!
-- A staff stock edit took a product to 0 (orders.sql: place_order writes its own).
INSERT INTO events (type, data)
VALUES ('product.out_of_stock',
        json_build_object('product', json_build_object('id', :product_id::bigint,
                                                       'name', :name::text, 'stock', 0)));

-- name: get_event(id)^
-- One event as its envelope's fields.
SELECT id::text AS id, type, api_time(created_at) AS created_at, data
  FROM events
 WHERE id = :id::uuid;

-- name: claim_email(event_id, template, recipient)$
-- Claims the email of an event inside the transaction that sends it; NULL when it was sent
-- already (a retried or duplicated job then sends nothing).
INSERT INTO sent_emails (event_id, template, recipient)
VALUES (:event_id::uuid, :template, :recipient)
    ON CONFLICT DO NOTHING
RETURNING template;

-- name: delete_old_events(older_than_seconds)!
-- Housekeeping: relayed events past the retention window (their delivery log and email
-- claims cascade).
DELETE FROM events
 WHERE relayed_at IS NOT NULL
   AND created_at < now() - make_interval(secs => :older_than_seconds);
