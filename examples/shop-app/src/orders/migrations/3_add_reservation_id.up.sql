-- The stock reservation an order took (`POST /orders`; a checkout's order took its checkout's,
-- `checkout_id`): the `expire-reservations` job asks which reservations an order took.
ALTER TABLE orders ADD COLUMN reservation_id UUID UNIQUE;
