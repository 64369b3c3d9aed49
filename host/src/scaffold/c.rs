//! The C project `sluice new --lang c` writes: bindings from `wit-bindgen
//! c`, a wasi-libc reactor built with clang, made a component by
//! `wasm-tools component new` with the WASI preview1 adapter of the host's
//! own wasmtime release (written into the project), all driven by `make`.

use super::{MANIFEST, WORLD, with_wit};

/// The project's files, by path.
pub(super) fn files(name: &str) -> Vec<(String, Vec<u8>)> {
    let c = name.replace('-', "_");
    let text = |t: &str| t.replace("NAME_C", &c).replace("NAME", name).into_bytes();
    let mut files = vec![
        (format!("{name}.c"), text(APP)),
        ("greetings.c".to_string(), text(LOGIC)),
        ("greetings.h".to_string(), text(LOGIC_H)),
        ("test_greetings.c".to_string(), text(TEST)),
        ("Makefile".to_string(), text(MAKEFILE)),
        ("wit/world.wit".to_string(), text(WORLD)),
        ("manifest.toml".to_string(), text(MANIFEST)),
        ("README.md".to_string(), text(README)),
        (".gitignore".to_string(), b"/gen\n*.wasm\n!/wasi_snapshot_preview1.reactor.wasm\n/test_greetings\n".to_vec()),
    ];
    files.push((
        "wasi_snapshot_preview1.reactor.wasm".to_string(),
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER.to_vec(),
    ));
    with_wit(files)
}

const APP: &str = r#"// The service NAME: `greet` reads a key of the host's `kv` channel and
// queues an increment of it, applied only when the host saves the scope.
// Bindings come from `wit-bindgen c` (gen/NAME_C.h, written by `make`).

#include <stdlib.h>
#include <string.h>

#include "NAME_C.h"
#include "greetings.h"

// The channel every host has: keys in a table of its database.
static const char *CHANNEL = "kv";

// An `invalid` error holding a copy of `message` (the host frees it).
static bool invalid(const char *message, exports_local_NAME_C_api_error_t *err) {
    err->tag = SLUICE_SERVICE_TYPES_ERROR_INVALID;
    NAME_C_string_dup(&err->val.invalid, message);
    return false;
}

bool exports_local_NAME_C_api_greet(NAME_C_string_t *who, uint64_t *ret, exports_local_NAME_C_api_error_t *err) {
    char *key_text = greeting_key((const char *)who->ptr, who->len);
    NAME_C_string_free(who);
    if (key_text == NULL) {
        return invalid("who is empty", err);
    }
    NAME_C_string_t channel, key;
    NAME_C_string_set(&channel, CHANNEL);
    NAME_C_string_set(&key, key_text);

    NAME_C_option_list_u8_t stored;
    if (!sluice_service_from_get(&channel, &key, &stored, err)) {
        free(key_text);
        return false; // the host's error, handed back as ours
    }
    uint64_t before = 0;
    bool counted = !stored.is_some || greeting_count(stored.val.ptr, stored.val.len, &before);
    NAME_C_option_list_u8_free(&stored);
    if (!counted) {
        free(key_text);
        return invalid("the counter is not a number", err);
    }

    sluice_service_to_ticket_t ticket;
    bool queued = sluice_service_to_increment(&channel, &key, 1, &ticket, err);
    free(key_text);
    if (!queued) {
        return false;
    }
    *ret = before + 1;
    return true;
}
"#;

const LOGIC_H: &str = r#"// What the service decides without the host: plain C, tested natively
// by `make test`.

#ifndef GREETINGS_H
#define GREETINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// The key counting the greetings of `who` (`len` bytes, not terminated):
// "greetings/" and the name without surrounding blanks, in a string the
// caller frees; NULL when the name is blank.
char *greeting_key(const char *who, size_t len);

// A counter's value: decimal text, as `to.increment` keeps it. False when
// the bytes are not a number.
bool greeting_count(const uint8_t *bytes, size_t len, uint64_t *out);

#endif
"#;

const LOGIC: &str = r#"#include "greetings.h"

#include <stdlib.h>
#include <string.h>

static bool blank(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

char *greeting_key(const char *who, size_t len) {
    while (len > 0 && blank(who[0])) {
        who++;
        len--;
    }
    while (len > 0 && blank(who[len - 1])) {
        len--;
    }
    if (len == 0) {
        return NULL;
    }
    static const char prefix[] = "greetings/";
    char *key = malloc(sizeof prefix + len);
    if (key == NULL) {
        return NULL;
    }
    memcpy(key, prefix, sizeof prefix - 1);
    memcpy(key + sizeof prefix - 1, who, len);
    key[sizeof prefix - 1 + len] = '\0';
    return key;
}

bool greeting_count(const uint8_t *bytes, size_t len, uint64_t *out) {
    if (len == 0 || len > 20) {
        return false;
    }
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (bytes[i] < '0' || bytes[i] > '9') {
            return false;
        }
        n = n * 10 + (uint64_t)(bytes[i] - '0');
    }
    *out = n;
    return true;
}
"#;

const TEST: &str = r#"// `make test`: the service's logic, natively, without the host.

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "greetings.h"

int main(void) {
    char *key = greeting_key(" ann ", 5);
    assert(key != NULL && strcmp(key, "greetings/ann") == 0);
    free(key);
    assert(greeting_key("  ", 2) == NULL);

    uint64_t n = 0;
    assert(greeting_count((const uint8_t *)"41", 2, &n) && n == 41);
    assert(!greeting_count((const uint8_t *)"4x", 2, &n));
    puts("test_greetings: ok");
    return 0;
}
"#;

const MAKEFILE: &str = r#"# Builds NAME.wasm (`make`) and runs the unit test natively (`make test`).
# The tools, at the versions the host that wrote this project is tested
# with: clang-19, lld-19, wasi-libc and libclang-rt-19-dev-wasm32 (Debian:
# apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32),
# wit-bindgen (cargo install wit-bindgen-cli --version 0.61.1) and
# wasm-tools (cargo install wasm-tools --version 1.263.0). Each can be
# pointed elsewhere: make CLANG=... WIT_BINDGEN=... WASM_TOOLS=... SYSROOT=...

CLANG ?= clang-19
SYSROOT ?= /usr
WIT_BINDGEN ?= wit-bindgen
WASM_TOOLS ?= wasm-tools
CC ?= cc

NAME.wasm: NAME.c greetings.c greetings.h wit/world.wit
	$(WIT_BINDGEN) c wit --world local:NAME/NAME --out-dir gen
	$(CLANG) --target=wasm32-wasi --sysroot=$(SYSROOT) -mexec-model=reactor -O2 -Wall -Werror \
		-Wno-unused-function -Igen -o gen/core.wasm NAME.c greetings.c gen/NAME_C.c gen/NAME_C_component_type.o
	$(WASM_TOOLS) component new gen/core.wasm \
		--adapt wasi_snapshot_preview1=wasi_snapshot_preview1.reactor.wasm -o NAME.wasm

test: test_greetings
	./test_greetings

test_greetings: test_greetings.c greetings.c greetings.h
	$(CC) -Wall -Werror -o test_greetings test_greetings.c greetings.c

.PHONY: test
"#;

const README: &str = r#"# NAME

A Sluice service in C. Build it (the tools are listed at the top of the
`Makefile`), then drop it into a services directory:

```sh
make && cp NAME.wasm SERVICES/NAME.wasm && cp manifest.toml SERVICES/NAME.toml
```

`sluice --services SERVICES call 'NAME.greet("ann")'` runs it once;
`make test` runs its unit test natively.

`wit/world.wit` is the service's world; `wit/deps/sluice-service/` is the
`sluice:service` package of the host that wrote this project, and
`wasi_snapshot_preview1.reactor.wasm` the WASI adapter of its wasmtime
release, which turns the wasi-libc module into a component.
"#;
