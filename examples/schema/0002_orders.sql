-- Orders and the clearings that settle them (the `orders` example).
CREATE TABLE orders (
    id          INTEGER PRIMARY KEY,
    customer    TEXT    NOT NULL,
    product_id  INTEGER NOT NULL REFERENCES products (id),
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    total_cents INTEGER NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('placed', 'cleared'))
);

CREATE TABLE clearings (
    id           INTEGER PRIMARY KEY,
    order_id     INTEGER NOT NULL UNIQUE REFERENCES orders (id),
    amount_cents INTEGER NOT NULL
);
