-- How many times the order's event was delivered; the email is sent on the first only.
ALTER TABLE notifications ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 1;
