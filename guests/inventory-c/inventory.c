// Example service `inventory`, in C: the same behaviour and the same errors
// as the Rust `guests/inventory`. Keeps stock per product. Reads go through
// `from`; changes are queued through `to` and applied only when the host
// saves the scope. `orders` calls `reserve` in the same scope.
//
// Bindings come from `wit-bindgen c` (inventory.h); it is a wasi-libc
// reactor, so printf goes to the host log.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inventory.h"

// The channel the examples keep their tables in.
static const char *CHANNEL = "main";

typedef exports_acme_inventory_stock_stock_error_t stock_error_t;

static inventory_string_t str(const char *s) {
    inventory_string_t out;
    inventory_string_set(&out, s);
    return out;
}

static sluice_service_types_value_t integer(int64_t v) {
    sluice_service_types_value_t out;
    out.tag = SLUICE_SERVICE_TYPES_VALUE_INTEGER;
    out.val.integer = v;
    return out;
}

static bool invalid_quantity(uint32_t quantity, stock_error_t *err) {
    err->tag = EXPORTS_ACME_INVENTORY_STOCK_STOCK_ERROR_INVALID_QUANTITY;
    err->val.invalid_quantity = quantity;
    return false;
}

static bool store_error(sluice_service_types_error_t *e, stock_error_t *err) {
    err->tag = EXPORTS_ACME_INVENTORY_STOCK_STOCK_ERROR_STORE;
    err->val.store = *e; // ownership passes to the result
    return false;
}

// The stock of `product_id` (0 without a row) in *on_hand.
static bool on_hand(int64_t product_id, int64_t *on_hand, stock_error_t *err) {
    inventory_string_t channel = str(CHANNEL);
    inventory_string_t sql = str("SELECT on_hand FROM stock WHERE product_id = ?1");
    sluice_service_types_value_t param = integer(product_id);
    sluice_service_from_list_value_t params = {&param, 1};
    sluice_service_from_rows_t rows;
    sluice_service_from_error_t e;
    if (!sluice_service_from_query(&channel, &sql, &params, &rows, &e)) {
        return store_error(&e, err);
    }
    *on_hand = 0;
    for (size_t c = 0; c < rows.columns.len; c++) {
        inventory_string_t *name = &rows.columns.ptr[c];
        if (rows.values.len > 0 && name->len == 7 && memcmp(name->ptr, "on_hand", 7) == 0) {
            sluice_service_types_value_t *v = &rows.values.ptr[0].ptr[c];
            if (v->tag == SLUICE_SERVICE_TYPES_VALUE_INTEGER) {
                *on_hand = v->val.integer;
            }
        }
    }
    sluice_service_from_rows_free(&rows);
    return true;
}

// Queues `sql` with (product_id, quantity).
/* Queues `statement`; with `rows` of 0 or more, the save requires it to
   change exactly that many rows (to.expect). */
static bool execute(const char *statement, int64_t product_id, uint32_t quantity, int64_t rows, stock_error_t *err) {
    inventory_string_t channel = str(CHANNEL);
    inventory_string_t sql = str(statement);
    sluice_service_types_value_t values[2] = {integer(product_id), integer(quantity)};
    sluice_service_to_list_value_t params = {values, 2};
    sluice_service_to_ticket_t ticket;
    sluice_service_to_error_t e;
    if (!sluice_service_to_execute(&channel, &sql, &params, &ticket, &e)) {
        return store_error(&e, err);
    }
    if (rows >= 0 && !sluice_service_to_expect(ticket, (uint64_t)rows, &e)) {
        return store_error(&e, err);
    }
    return true;
}

bool exports_acme_inventory_stock_reserve(int64_t product_id, uint32_t quantity, stock_error_t *err) {
    if (quantity == 0) {
        return invalid_quantity(quantity, err);
    }
    int64_t stock;
    if (!on_hand(product_id, &stock, err)) {
        return false;
    }
    if (stock < (int64_t)quantity) {
        err->tag = EXPORTS_ACME_INVENTORY_STOCK_STOCK_ERROR_INSUFFICIENT;
        err->val.insufficient = stock;
        return false;
    }
    /* The guarded update must take exactly the one row. */
    return execute("UPDATE stock SET on_hand = on_hand - ?2 WHERE product_id = ?1 AND on_hand >= ?2", product_id,
                   quantity, 1, err);
}

bool exports_acme_inventory_stock_restock(int64_t product_id, uint32_t quantity, stock_error_t *err) {
    if (quantity == 0) {
        return invalid_quantity(quantity, err);
    }
    printf("restocking product %lld by %u\n", (long long)product_id, quantity);
    fflush(stdout);
    return execute("INSERT INTO stock (product_id, on_hand) VALUES (?1, ?2)\n"
                   "             ON CONFLICT (product_id) DO UPDATE SET on_hand = stock.on_hand + excluded.on_hand",
                   product_id, quantity, -1, err);
}

bool exports_acme_inventory_stock_level(int64_t product_id, int64_t *ret, stock_error_t *err) {
    return on_hand(product_id, ret, err);
}
