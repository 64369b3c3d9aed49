//! The JavaScript project `sluice new --lang js` writes (componentize-js).

use super::{MANIFEST, WORLD, with_wit};

/// The JavaScript project's files, by path.
pub(super) fn files(name: &str) -> Vec<(String, String)> {
    let files = vec![
        ("app.js".to_string(), JS_APP.to_string()),
        ("greetings.js".to_string(), JS_LOGIC.to_string()),
        ("greetings.test.js".to_string(), JS_TEST.to_string()),
        ("package.json".to_string(), JS_PACKAGE.replace("NAME", name)),
        ("package-lock.json".to_string(), JS_LOCK.replace("sluice-js-guest-toolchain", name)),
        ("wit/world.wit".to_string(), WORLD.replace("NAME", name)),
        ("manifest.toml".to_string(), MANIFEST.replace("NAME", name)),
        ("README.md".to_string(), JS_README.replace("NAME", name)),
        (".gitignore".to_string(), "/node_modules\n*.wasm\n".to_string()),
    ];
    with_wit(files)
}

/// The lockfile the host's JavaScript port is built with.
const JS_LOCK: &str = include_str!("../../../guests/toolchains/js/package-lock.json");

const JS_PACKAGE: &str = r#"{
  "name": "NAME",
  "private": true,
  "type": "module",
  "description": "A Sluice service; see README.md.",
  "dependencies": {
    "@bytecodealliance/componentize-js": "0.23.0",
    "@bytecodealliance/preview2-shim": "0.25.0"
  }
}
"#;

const JS_APP: &str = r#"// The service's exports: componentize-js builds this module into the
// component. Reads go through `from`; `to` only queues commands, applied
// when the host saves the scope. `s64` and `u64` are BigInts; a `result`
// error is thrown as `{ tag, val }`.

import { get } from "sluice:service/from@0.1.0";
import { increment } from "sluice:service/to@0.1.0";

import { count, key } from "./greetings.js";

// The channel every host has: keys in a table of its database.
const CHANNEL = "kv";

export const api = {
  // Counts a greeting of `who`: reads how many there were, queues one more
  // and returns the new count.
  greet(who) {
    const name = key(who);
    if (name === null) {
      throw { tag: "invalid", val: "who is empty" };
    }
    const before = get(CHANNEL, name);
    increment(CHANNEL, name, 1n);
    return BigInt(count(before) + 1);
  },
};
"#;

const JS_LOGIC: &str = r#"// What the service decides without the host: testable with `node --test`.

// The key counting `who`'s greetings; null for an empty name.
export function key(who) {
  const name = who.trim();
  return name ? `greetings/${name}` : null;
}

// A counter's value: decimal text, as `to.increment` keeps it.
export function count(value) {
  return value ? Number(new TextDecoder().decode(value)) : 0;
}
"#;

const JS_TEST: &str = r#"import assert from "node:assert/strict";
import { test } from "node:test";

import { count, key } from "./greetings.js";

test("keys name who and refuse nobody", () => {
  assert.equal(key(" ann "), "greetings/ann");
  assert.equal(key("  "), null);
  assert.equal(count(new TextEncoder().encode("41")), 41);
  assert.equal(count(undefined), 0);
});
"#;

const JS_README: &str = r#"# NAME

A Sluice service in JavaScript. Build it (Node.js 18 or later; installs
componentize-js into `node_modules` the first time), then drop it into a
services directory:

```sh
npm install --no-audit --no-fund --loglevel=error && node_modules/.bin/componentize-js app.js --wit wit -n local:NAME/NAME -d http fetch-event -o NAME.wasm && cp NAME.wasm SERVICES/NAME.wasm && cp manifest.toml SERVICES/NAME.toml
```

`sluice --services SERVICES call NAME.greet ann` runs it once;
`node --test` runs its unit tests.

`wit/world.wit` is the service's world; `wit/deps/sluice-service/` is the
`sluice:service` package of the host that wrote this project.
"#;
