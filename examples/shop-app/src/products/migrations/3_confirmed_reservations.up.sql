-- A reservation its order's `order-created` event confirmed is 'confirmed'; one still 'reserved'
-- ten minutes after it was made (no order was recorded: its process died in between) is
-- 'expired' by the `expire-reservations` cron job, and its stock given back
-- (products::expire_reservations).
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
    CHECK (status IN ('reserved', 'released', 'confirmed', 'expired'));
CREATE INDEX reservations_unconfirmed ON reservations (created_at) WHERE status = 'reserved';
