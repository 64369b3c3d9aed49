// Example service `products`, in JavaScript: the same behaviour and the same
// errors as the Rust `guests/products`. Adds products to the catalogue and
// lists it. Reads go through `from`; the insert is queued through `to` and
// applied only when the host saves the scope.
//
// WIT mapping (componentize-js): `s64` is a BigInt, a variant is
// `{ tag, val }`, and a `result` error is thrown (imports throw an error
// whose `payload` is the WIT error value).

import { query } from "sluice:service/from@0.1.0";
import { insert } from "sluice:service/to@0.1.0";

// The channel the examples keep their tables in.
const CHANNEL = "main";
// The longest name, in characters.
const MAX_NAME = 100;

const text = (val) => ({ tag: "text", val });
const integer = (val) => ({ tag: "integer", val });

// Runs a `from` or `to` call, turning its error into `product-error.store`.
function store(call) {
  try {
    return call();
  } catch (e) {
    throw { tag: "store", val: e.payload ?? { tag: "unavailable", val: String(e) } };
  }
}

// The checks that need no database; returns the trimmed name.
function checkProduct(name, priceCents) {
  const trimmed = name.trim();
  if (trimmed.length === 0 || [...trimmed].length > MAX_NAME) {
    throw { tag: "invalid-name", val: trimmed };
  }
  if (priceCents <= 0n) {
    throw { tag: "invalid-price", val: priceCents };
  }
  return trimmed;
}

// The value of `column` in row `index`, or undefined.
function get(rows, index, column) {
  const col = rows.columns.indexOf(column);
  return col < 0 ? undefined : rows.values[index]?.[col]?.val;
}

export const api = {
  add(name, priceCents) {
    const checked = checkProduct(name, priceCents);
    const taken = store(() => query(CHANNEL, "SELECT 1 FROM products WHERE name = ?1", [text(checked)]));
    if (taken.values.length > 0) {
      throw { tag: "duplicate-name", val: checked };
    }
    store(() =>
      insert(CHANNEL, "products", { columns: ["name", "price_cents"], values: [text(checked), integer(priceCents)] }),
    );
    console.log(`queued product ${checked} at ${priceCents} cents`);
  },

  list() {
    const rows = store(() => query(CHANNEL, "SELECT id, name, price_cents FROM products ORDER BY id", []));
    return rows.values.map((_, i) => ({
      id: get(rows, i, "id") ?? 0n,
      name: get(rows, i, "name") ?? "",
      priceCents: get(rows, i, "price_cents") ?? 0n,
    }));
  },
};
