# Sluice: the only entry points. `just run` and `just test` do all set-up.

target := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() / "target")
# Every guest component, built by `just guests`; the tests read them here.
components := target / "components"
# The venv with the Python tools the tests use.
venv := target / "venv"
# The example services, served by `just run`.
examples := "orders products inventory api cart notifications payments"
# The Conduit example's components, served by `just conduit`.
conduit := "users profiles articles comments conduit-api"

# List the recipes.
default:
    @just --list

# Build every Rust guest component and copy the examples, with their
# manifests, into services/. Needs nothing but rustup.
guests:
    scripts/build-guests {{components}}
    mkdir -p services
    for s in {{examples}}; do cp {{components}}/$s.wasm {{components}}/$s.toml services/; done

# Build the Python, JavaScript and C ports of the examples, installing
# their pinned toolchains when missing and proving each with the smallest
# build; a language that cannot be had is skipped with what to install
# (SLUICE_REQUIRE_TOOLS=1 makes that an error). `just run` never needs them.
polyglot:
    scripts/build-polyglot {{components}}

# Build the host.
build:
    cargo build -p sluice-host

# Build the host and the Rust example services (no other toolchain), create
# the example schema in data/example, and serve
# the example services over HTTP (SLUICE_LISTEN=ADDR to move it off
# 127.0.0.1:8080). It prints the URL and a curl to try; Ctrl-C stops it.
run: build guests
    #!/usr/bin/env bash
    set -euo pipefail
    sluice() { {{target}}/debug/sluice --data-dir data/example "$@"; }
    sluice migrate examples/schema
    exec {{target}}/debug/sluice --data-dir data/example serve

# Build the host and the Conduit example (examples/conduit: the RealWorld
# API as five components), migrate its schema into data/conduit, and serve
# it: the API is under http://127.0.0.1:8080/api (SLUICE_LISTEN=ADDR to
# move it). The signing key of its tokens is CONDUIT_JWT_KEY, or one made
# once into data/conduit/jwt.key. SLUICE_CONFIG=examples/conduit/postgres.toml
# serves it on PostgreSQL instead.
conduit: build guests
    #!/usr/bin/env bash
    set -euo pipefail
    dir=data/conduit/services
    mkdir -p "$dir"
    for s in {{conduit}}; do cp {{components}}/$s.wasm {{components}}/$s.toml "$dir/"; done
    if [ -z "${CONDUIT_JWT_KEY:-}" ]; then
        [ -s data/conduit/jwt.key ] || (umask 077; head -c 32 /dev/urandom | base64 > data/conduit/jwt.key)
        export CONDUIT_JWT_KEY=$(cat data/conduit/jwt.key)
    fi
    sluice() { {{target}}/debug/sluice --config "${SLUICE_CONFIG:-examples/conduit/sluice.toml}" --services "$dir" "$@"; }
    sluice migrate examples/conduit/schema
    echo "Conduit: the API is under http://${SLUICE_LISTEN:-127.0.0.1:8080}/api (try: curl -s http://${SLUICE_LISTEN:-127.0.0.1:8080}/api/tags)"
    sluice serve

# The example scenario through the CLI, one scope per command, on a fresh
# data/example database.
demo: build guests
    #!/usr/bin/env bash
    set -euo pipefail
    sluice() { echo "\$ sluice $*" >&2; {{target}}/debug/sluice --data-dir data/example "$@"; }
    rm -f data/example/main.db data/example/main.db-wal data/example/main.db-shm
    sluice list
    sluice migrate examples/schema
    sluice call products.add widget 250
    sluice call products.add gadget 1200
    sluice call products.list
    sluice call inventory.restock 1 10
    echo "# a dry run: every save round runs, then everything is rolled back:" >&2
    sluice call --dry-run orders.place ann 1 3
    echo "# orders calls inventory in the same scope; on-save queues round 2:" >&2
    sluice call orders.place ann 1 3
    sluice call orders.place bob 1 30 || echo "(exit $?: the service returned an error)" >&2
    sluice call orders.do-clearing 1
    echo "# clearing it again is refused by the service, so nothing is applied:" >&2
    sluice call orders.do-clearing 1 || echo "(exit $?: the service returned an error)" >&2

# Build what the tests need and run every test: host, guests' own unit
# tests, end to end; and check that the benchmarks compile. Each step is
# timed (scripts/step) and the table printed at the end; `.ci/run` passes
# its own SLUICE_STEPS so that its table holds these steps and its own.
test:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -z "${SLUICE_STEPS:-}" ]; then
        export SLUICE_STEPS=$(mktemp)
        trap '{{quote(justfile_directory() / "scripts/step")}} --table; rm -f "$SLUICE_STEPS"' EXIT
    fi
    step() { {{quote(justfile_directory() / "scripts/step")}} "$@"; }
    just={{quote(just_executable())}}
    step guests "$just" guests
    step polyglot "$just" polyglot
    step tools "$just" tools
    step wit-package "$just" wit-package
    export SLUICE_COMPONENTS={{quote(components)}} SLUICE_VENV={{quote(venv)}}
    step "build: host tests (dev)" cargo test --workspace --no-run
    step "build: host benches" cargo build --benches -p sluice-host
    step "test: lib (every crate)" cargo test --workspace --lib
    step "test: sluice bin" cargo test -p sluice-host --bins
    step "test: e2e" cargo test -p sluice-host --test e2e
    step "test: doc" cargo test --workspace --doc
    cd guests
    step "build: guests native" cargo test --no-run --target-dir {{quote(target / "guests-native")}}
    step "test: guests native" cargo test --target-dir {{quote(target / "guests-native")}}

# The crash test of the outbox at full length: 50 SIGKILLs of `sluice
# serve` under a load of orders, each followed by a restart on the same
# database and stream and a check that no message is lost or doubled
# (`just test` runs it with 3). Needs NATS at 127.0.0.1:4222; the figures
# go to stderr and target/crash-report.json.
crash kills="50": guests
    SLUICE_COMPONENTS={{components}} SLUICE_CRASH_KILLS={{kills}} SLUICE_REQUIRE_TOOLS=1 cargo test -p sluice-host --test e2e crash -- --nocapture

# Three `sluice serve` hosts on the local PostgreSQL (database
# sluice_cluster, made when missing) and NATS JetStream, serving the
# examples, with the webhook receiver; prints their URLs, Ctrl-C stops
# them (scripts/cluster). Needs psql, PostgreSQL and NATS.
cluster: build guests
    scripts/cluster {{target}}/debug/sluice

# The fleet test at length: three `sluice serve` hosts on one PostgreSQL
# database, 16 clients placing orders with idempotency keys, one host
# killed with SIGKILL every 6 s for two minutes (`just test` runs two hosts
# for 4 s). Needs PostgreSQL at 127.0.0.1:5432; the figures go to stderr.
fleet seconds="120": guests
    SLUICE_COMPONENTS={{components}} SLUICE_FLEET_HOSTS=3 SLUICE_FLEET_SECONDS={{seconds}} SLUICE_FLEET_KILL_MS=6000 SLUICE_FLEET_STOCK=1000000 SLUICE_REQUIRE_TOOLS=1 cargo test -p sluice-host --test e2e orders_on_a_fleet -- --nocapture

# The sluice:service WIT package (wit/) as a distributable binary package,
# built with wkg (`wkg build`, installed at a pinned version under the target
# dir when missing) into target/wit/sluice-service.wasm: a service can use it
# from its wit/deps/, a registry can hold it.
wit-package:
    scripts/wit-package {{target}}/wit/sluice-service.wasm

# Python tools the tests use (the OpenAPI validator), pinned in
# scripts/requirements-tools.txt, in a venv under the target dir. Without
# PyPI the tests that need them say so and skip (CI requires them).
tools:
    scripts/python-tools {{venv}}

# Run the benchmarks: criterion (B1 to B4), the instruction counts (B4's
# like-for-like figure), then HTTP under wrk (B5, B6), then a fleet on
# PostgreSQL against pgbench (B8), then the Conduit example against the shop
# (B9), then how the costs grow, and write BENCHMARKS.md and
# docs/growth.svg from this run (release build; the first takes a while).
bench: guests polyglot
    SLUICE_COMPONENTS={{components}} cargo bench -p sluice-host --bench scope
    scripts/counts > {{target}}/counts.md || true
    scripts/bench-http {{target}}/bench-http.json
    scripts/bench-fleet {{target}}/bench-fleet.json
    scripts/bench-conduit {{target}}/bench-conduit.json
    scripts/bench-growth {{target}}/bench-growth.json
    scripts/bench-report {{target}}/criterion {{target}}/bench-http.json BENCHMARKS.md {{target}}/bench-fleet.json {{target}}/bench-conduit.json --growth {{target}}/bench-growth.json --counts {{target}}/counts.md

# How the costs grow alone (scripts/bench-growth): services loaded, rows
# kept, request size; prints the JSON's path.
bench-growth: guests
    SLUICE_COMPONENTS={{components}} scripts/bench-growth {{target}}/bench-growth.json

# B8 alone: the fleet on one PostgreSQL database against pgbench
# (scripts/bench-fleet), written into BENCHMARKS.md in place.
bench-fleet: guests
    scripts/bench-fleet {{target}}/bench-fleet.json
    scripts/bench-report --fleet {{target}}/bench-fleet.json BENCHMARKS.md

# B9 alone: the Conduit example against the shop examples under wrk
# (scripts/bench-conduit), written into BENCHMARKS.md in place.
bench-conduit: guests
    scripts/bench-conduit {{target}}/bench-conduit.json
    scripts/bench-report --conduit {{target}}/bench-conduit.json BENCHMARKS.md

# Instruction counts of B1 to B4's hot paths under callgrind, against
# host/benches/counts.baseline: fails when one grew by more than 10% (CI
# runs it). `just counts --update` rewrites the baseline; commit it with a
# change that is meant to cost more.
counts *args: guests
    scripts/counts {{args}}

# Type-check the host for macOS (aarch64-apple-darwin) from Linux: the
# Rust compiles there, C dependencies stubbed (CI runs it).
check-macos:
    scripts/check-macos

# Formatting and clippy, warnings as errors, for the host and the guests.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    cd guests && cargo fmt --all --check
    cd guests && cargo clippy --target wasm32-wasip2 --target-dir {{target}}/guests -- -D warnings
