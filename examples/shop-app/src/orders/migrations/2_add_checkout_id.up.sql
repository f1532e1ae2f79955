-- The gateway's checkout an order was placed by: one order per checkout, however often the
-- checkout retries. A cancelled checkout leaves a 'cancelled' row, so a late retry places none.
ALTER TABLE orders ADD COLUMN checkout_id UUID UNIQUE;
