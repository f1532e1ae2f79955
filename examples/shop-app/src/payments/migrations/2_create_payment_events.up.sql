-- What the payment provider told us through its webhook, once per event: the provider
-- retries a delivery until it is acknowledged, so the same event may arrive again.
CREATE TABLE payment_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    payload JSONB NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
