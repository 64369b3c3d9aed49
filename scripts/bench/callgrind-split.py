#!/usr/bin/env python3
"""Splits a callgrind profile's instructions (exclusive, per function) into
the parts docs/performance.md reports: the guest's own code (JIT code with
no symbol), wasmtime, Sluice, SQLite, rusqlite, malloc and free, other
Rust (std, hashing, formatting), and the rest.

    callgrind_annotate OUT | scripts/bench/callgrind-split.py
"""
import re
import sys

PARTS = [
    ("guest code (JIT, no symbol)", lambda f: f.startswith("???:0x")),
    ("malloc and free", lambda f: "malloc" in f or "__rust_alloc" in f or "__rdl_" in f or "__rust_dealloc" in f
        or "_int_free" in f or ":free" in f or "__rust_realloc" in f or "realloc" in f.split(":")[-1][:8]),
    ("memcpy and memset", lambda f: "memset" in f or "memmove" in f or "memcpy" in f or "memcmp" in f),
    ("SQLite", lambda f: re.search(r"\?\?\?:(sqlite3|btree[A-Z]|yy_|vdbe|Vdbe|pager|moveTo|getPage|getAndInit|releaseMem|unixShm|walIndex|sqlite)", f) is not None),
    ("rusqlite", lambda f: "rusqlite" in f or "hashlink" in f),
    ("wasmtime", lambda f: "wasmtime" in f or "cranelift" in f or "wasmparser" in f),
    ("Sluice", lambda f: "sluice_host" in f),
    ("hashing", lambda f: "hash" in f.lower() or "sip::" in f),
    ("formatting and strings", lambda f: "fmt" in f or "str" in f.split(":")[-1][:6] or "String" in f),
]

total = 0
split = {name: 0 for name, _ in PARTS}
split["other"] = 0
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*)$", line)
    if not m:
        continue
    n = int(m.group(1).replace(",", ""))
    function = m.group(2)
    if "PROGRAM TOTALS" in function:
        total = n
        continue
    for name, test in PARTS:
        if test(function):
            split[name] += n
            break
    else:
        split["other"] += n
print("| part | instructions | share |")
print("|---|---|---|")
for name, n in sorted(split.items(), key=lambda kv: -kv[1]):
    if n:
        print(f"| {name} | {n:,} | {100 * n / max(total, 1):.1f}% |")
print(f"| total | {total:,} | |")
