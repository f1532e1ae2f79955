-- One row per checkout saga: how far it got, so that a crash never leaves stock reserved or
-- money taken without an order. See `checkout::saga`.
CREATE TABLE checkouts (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL,
    product_id UUID NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    total_cents BIGINT NOT NULL CHECK (total_cents >= 0),
    -- started → reserved → charged → completed; or, from any of the first three,
    -- compensating → failed
    state TEXT NOT NULL CHECK (state IN
        ('started', 'reserved', 'charged', 'completed', 'compensating', 'failed')),
    -- The state the saga failed in: which steps the compensation must undo.
    failed_in TEXT,
    error TEXT,
    order_id UUID,
    -- Until when the process driving the saga owns it; recovery takes over sagas whose lease
    -- ran out (their process crashed, or a compensation failed and waits for its retry).
    lease_until TIMESTAMP WITH TIME ZONE NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);
CREATE INDEX checkouts_unfinished ON checkouts (lease_until)
    WHERE state NOT IN ('completed', 'failed');
