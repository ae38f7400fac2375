-- Events (the outbox), merchant webhooks, their delivery log, and the emails sent for events.
-- depends: 0007_job_engine

-- An event is inserted by the same statement as the change that causes it (orders.sql), so
-- the two commit together or not at all. The relay (events.sql: relay_events) turns each
-- committed event into its jobs once and stamps relayed_at in the same statement.
-- `data` is json, not jsonb: written on the order path, it is stored as built, unparsed.
CREATE TABLE events (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    type       text        NOT NULL CHECK (type IN ('order.created', 'order.status_changed',
                                                    'order.payment_failed',
                                                    'product.out_of_stock')),
    data       json        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    relayed_at timestamptz
);
-- the relay's queue: only the few events not yet relayed are in this index. No index on
-- created_at for all rows: it would cost every order an index write for the hourly purge.
CREATE INDEX events_unrelayed_idx ON events (created_at) WHERE relayed_at IS NULL;

CREATE TABLE webhooks (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url        text        NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2048),
    events     text[]      NOT NULL CHECK (cardinality(events) > 0),
    -- the HMAC key deliveries are signed with: kept in clear, since signing needs it
    secret     text        NOT NULL,
    is_active  boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- one row per attempt; a redelivery starts a new series at attempt 1
CREATE TABLE webhook_deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      bigint      NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        uuid        NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    event_type      text        NOT NULL,
    attempt         integer     NOT NULL CHECK (attempt >= 1),
    status_code     integer,
    error           text,
    duration_ms     integer     NOT NULL CHECK (duration_ms >= 0),
    delivered_at    timestamptz NOT NULL DEFAULT now(),  -- when this attempt was made
    next_attempt_at timestamptz                           -- the retry it scheduled, if any
);
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, id DESC);
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id);

-- an email is claimed here in the transaction that sends it: a retried or duplicated job
-- finds the row and sends nothing
CREATE TABLE sent_emails (
    event_id  uuid        NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    template  text        NOT NULL,
    recipient text        NOT NULL,
    sent_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, template)
);
