-- A reservation an order took is 'confirmed'; one nobody took within ten minutes is released by
-- the `expire-reservations` cron job (products::expire_reservations).
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
    CHECK (status IN ('reserved', 'released', 'confirmed'));
CREATE INDEX reservations_unconfirmed ON reservations (created_at) WHERE status = 'reserved';
