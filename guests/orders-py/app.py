"""Example service `orders`, in Python: the same behaviour and the same
errors as the Rust `guests/orders`. Places orders and clears them. Reads go
through `from`, writes are queued through `to` and applied only when the host
saves the scope. Placing an order calls the `inventory` service in the same
scope, and `on_save` turns the new order's id into its `placed` event in a
second save round.

A new instance serves each scope, so module-level state lives for one scope.
"""

from componentize_py_types import Err

from wit_world import exports
from wit_world.exports import api
from wit_world.imports import from_, stock, to, types

# The channel the examples keep their tables in.
CHANNEL = "main"
# The largest quantity one order may ask for.
MAX_QUANTITY = 1000

# Tickets of order inserts queued in this scope, waiting for their ids.
placed_tickets: list[int] = []


def text(value: str) -> types.Value:
    return types.Value_Text(value)


def integer(value: int) -> types.Value:
    return types.Value_Integer(value)


def row(**columns: types.Value) -> types.Row:
    return types.Row(list(columns), list(columns.values()))


def get(rows: types.Rows, column: str):
    """The value of `column` in the first row, or None."""
    if not rows.values or column not in rows.columns:
        return None
    return rows.values[0][rows.columns.index(column)]


def store_error(call):
    """Runs a `from` or `to` call, turning its error into `order-error.store`."""
    try:
        return call()
    except Err as e:
        raise Err(api.OrderError_Store(e.value))


def queue_event(order_id: int, event: str) -> int:
    return to.insert(CHANNEL, "order_events", row(order_id=integer(order_id), event=text(event)))


class Api(exports.Api):
    def place(self, customer: str, product_id: int, quantity: int) -> api.Placed:
        if not customer.strip():
            raise Err(api.OrderError_EmptyCustomer())
        if quantity == 0 or quantity > MAX_QUANTITY:
            raise Err(api.OrderError_InvalidQuantity(quantity))
        found = store_error(
            lambda: from_.query(CHANNEL, "SELECT price_cents FROM products WHERE id = ?1", [integer(product_id)])
        )
        price = get(found, "price_cents")
        if not isinstance(price, types.Value_Integer):
            raise Err(api.OrderError_UnknownProduct(product_id))
        total_cents = price.value * quantity
        try:
            stock.reserve(product_id, quantity)
        except Err as e:
            refusal = e.value
            if isinstance(refusal, stock.StockError_Insufficient):
                raise Err(api.OrderError_OutOfStock(refusal.value))
            if isinstance(refusal, stock.StockError_InvalidQuantity):
                raise Err(api.OrderError_InvalidQuantity(refusal.value))
            raise Err(api.OrderError_Store(refusal.value))
        order = row(
            customer=text(customer),
            product_id=integer(product_id),
            quantity=integer(quantity),
            total_cents=integer(total_cents),
            status=text("placed"),
        )
        placed_tickets.append(store_error(lambda: to.insert(CHANNEL, "orders", order)))
        return api.Placed(total_cents)

    def do_clearing(self, order_id: int) -> None:
        found = store_error(
            lambda: from_.query(CHANNEL, "SELECT status, total_cents FROM orders WHERE id = ?1", [integer(order_id)])
        )
        if not found.values:
            raise Err(api.OrderError_UnknownOrder(order_id))
        status = get(found, "status")
        status = status.value if isinstance(status, types.Value_Text) else ""
        if status != "placed":
            raise Err(api.OrderError_NotPlaced(status))
        amount = get(found, "total_cents") or types.Value_Null()
        # The status guard in the WHERE clause keeps a concurrent clearing from
        # clearing the same order twice.
        # The guard, and the expectation that it takes exactly this order,
        # make a concurrent second clearing a conflict.
        cleared = store_error(
            lambda: to.execute(
                CHANNEL,
                "UPDATE orders SET status = 'cleared' WHERE id = ?1 AND status = 'placed'",
                [integer(order_id)],
            )
        )
        store_error(lambda: to.expect(cleared, 1))
        store_error(lambda: to.insert(CHANNEL, "clearings", row(order_id=integer(order_id), amount_cents=amount)))
        store_error(lambda: queue_event(order_id, "cleared"))


class Lifecycle(exports.Lifecycle):
    def init(self) -> None:
        pass

    def on_save(self, outcomes: list[tuple[int, types.Outcome]]) -> None:
        """The order's id exists only once its insert is applied: record the
        `placed` event now, in the next round of the same save."""
        placed = list(placed_tickets)
        placed_tickets.clear()
        for ticket, outcome in outcomes:
            if ticket in placed and isinstance(outcome, types.Outcome_Inserted):
                # A refusal here can only be a host misconfiguration (no
                # channel); raising makes the whole save fail visibly.
                queue_event(outcome.value, "placed")
                print(f"order {outcome.value} placed")

    def on_finally(self) -> None:
        pass

    def dispose(self) -> None:
        pass
