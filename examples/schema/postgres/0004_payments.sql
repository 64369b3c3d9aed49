-- Payments of orders through an external API (the `payments` example): a
-- payment is `pending` from the save that sends its charge until the API's
-- answer comes back to the service's reply handler (PostgreSQL).
CREATE TABLE payments (
    order_id     BIGINT PRIMARY KEY,
    amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),
    fee_cents    BIGINT NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'charged', 'declined')),
    charge_id    TEXT,
    failure      TEXT
);
