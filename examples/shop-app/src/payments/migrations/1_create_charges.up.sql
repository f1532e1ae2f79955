CREATE TABLE charges (
    -- The caller's idempotency key: one charge per key, however often it is retried.
    idempotency_key TEXT PRIMARY KEY,
    id UUID NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    -- NULL only for a key that was refunded before any charge: see `status`.
    user_id UUID,
    amount_cents BIGINT NOT NULL CHECK (amount_cents >= 0),
    -- charged | declined | refunded | void (refunded before it was charged: the key is spent,
    -- so a charge arriving late cannot take money the caller has given up on)
    status TEXT NOT NULL CHECK (status IN ('charged', 'declined', 'refunded', 'void')),
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    refunded_at TIMESTAMP WITH TIME ZONE
);
CREATE INDEX charges_by_user ON charges (user_id, created_at);
