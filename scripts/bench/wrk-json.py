"""Reads wrk's --latency output on stdin and prints one JSON line:
name, what was requested, requests per second, p50 and p99 in microseconds,
and the count of non-2xx answers and socket errors."""
import json
import re
import sys

UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def micros(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


name, what = sys.argv[1], sys.argv[2]
out = {"name": name, "request": what, "rps": None, "p50_us": None, "p99_us": None, "non_2xx": 0, "errors": 0}
for line in sys.stdin:
    words = line.split()
    if line.startswith("Requests/sec:"):
        out["rps"] = float(words[1])
    elif len(words) == 2 and words[0] in ("50%", "99%"):
        out["p50_us" if words[0] == "50%" else "p99_us"] = micros(words[1])
    elif "Non-2xx or 3xx responses:" in line:
        out["non_2xx"] = int(words[-1])
    elif line.strip().startswith("Socket errors:"):
        out["errors"] = sum(int(n) for n in re.findall(r"\d+", line))
print(json.dumps(out))
