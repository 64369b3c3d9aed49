-- Stock per product (the `inventory` example) and the events `orders`
-- records for each order, the `placed` one in a second save round.
CREATE TABLE stock (
    product_id INTEGER PRIMARY KEY REFERENCES products (id),
    on_hand    INTEGER NOT NULL CHECK (on_hand >= 0)
);

CREATE TABLE order_events (
    id       INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES orders (id),
    event    TEXT    NOT NULL
);
