CREATE TABLE products (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name TEXT NOT NULL,
    -- BIGINT, not the guide's INTEGER: prices times quantities must not overflow.
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    inventory INTEGER NOT NULL DEFAULT 0 CHECK (inventory >= 0)
);
