-- Reservations made with a caller's id, so that reserving and releasing can be retried.
CREATE TABLE reservations (
    id UUID PRIMARY KEY,
    product_id UUID NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity >= 0),
    -- reserved | released (a release that came before its reservation leaves a released row:
    -- the id is spent, and the late reservation is refused instead of holding stock forever)
    status TEXT NOT NULL CHECK (status IN ('reserved', 'released')),
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);
