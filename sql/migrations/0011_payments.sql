-- Card payments: the provider's payment of an order (one Stripe PaymentIntent per order), the
-- provider events already applied (each at most once), and what the expiry job scans.
-- depends: 0010_checkout

-- One payment per order: the primary key is what keeps two racing "start payment" calls from
-- creating two PaymentIntents (the second waits on the order row, then finds this one).
CREATE TABLE payments (
    order_id      bigint      PRIMARY KEY REFERENCES orders (id) ON DELETE CASCADE,
    provider      text        NOT NULL CHECK (provider IN ('stripe')),
    intent_id     text        NOT NULL UNIQUE,
    -- handed to the buyer's app (Stripe's SDK confirms the payment with it); Stripe shows it
    -- to the account's secret key holder anyway
    client_secret text        NOT NULL,
    amount_cents  bigint      NOT NULL CHECK (amount_cents > 0),
    currency      text        NOT NULL,
    -- the provider's refund, once asked for: a refund job that runs again finds it here
    refund_id     text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Webhook events applied: inserted in the transaction of their effect, so a redelivered (or
-- concurrently delivered) event id finds its row and changes nothing.
CREATE TABLE payment_events (
    event_id    text        PRIMARY KEY,
    type        text        NOT NULL,
    intent_id   text,
    received_at timestamptz NOT NULL DEFAULT now()
);
-- housekeeping deletes them after EVENT_RETENTION (Stripe redelivers for 3 days)
CREATE INDEX payment_events_received_idx ON payment_events (received_at);

-- The expiry job: pending orders past their expires_at, oldest first.
CREATE INDEX orders_payment_expiry_idx ON orders (expires_at)
    WHERE status = 'pending' AND expires_at IS NOT NULL;
