CREATE TABLE notifications (
    order_id UUID PRIMARY KEY,
    user_id UUID NOT NULL,
    email TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    deliveries INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX notifications_by_user ON notifications (user_id, sent_at);
