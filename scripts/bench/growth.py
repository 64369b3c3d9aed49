"""How costs grow: BENCHMARKS.md's section and the plot (docs/growth.svg)
from scripts/bench-growth's JSON. Used by scripts/bench-report."""

import json
import math


def shape(points):
    """A curve's shape from what it adds above its first point: constant
    when the last point is within 10% of the first; otherwise the log-log
    slope of that increment between the last two points (1: linear, more:
    worse than linear), where the growth, not the fixed cost, dominates."""
    (x0, y0) = points[0]
    (xa, ya), (xb, yb) = points[-2], points[-1]
    if y0 <= 0 or abs(yb - y0) <= 0.1 * y0:
        return "constant", 0.0
    da, db = ya - y0, yb - y0
    if da <= 0 or db <= 0 or xa == x0:
        return "?", 0.0
    slope = math.log(db / da) / math.log((xb - x0) / (xa - x0))
    if slope < 0.8:
        name = "sublinear"
    elif slope <= 1.2:
        name = "linear"
    else:
        name = "worse than linear"
    return name, slope


def kib(value):
    return f"{value / 1024:,.1f} MiB" if value >= 10 * 1024 else f"{value:,.0f} KiB"


def section(path):
    """(lines, goals): the section and the goals it measures."""
    lines = ["## Growth: how the costs grow", ""]
    try:
        growth = json.load(open(path))
    except (OSError, ValueError) as e:
        return lines + [f"Not measured ({e}).", ""], []
    if "skipped" in growth:
        return lines + [f"Skipped: {growth['skipped']}.", ""], []
    services = growth["services"]["points"]
    alone = growth["services"]["host_alone_rss_kib"]
    lines += [
        "`scripts/bench-growth`, on the release `sluice serve` at its default configuration. Services: 1 to 1,000",
        "distinct copies of `probe` (each with its own digest, so its own compiled code), started with a warm",
        "compilation cache; *start*: until `listening on`; *resident*: VmRSS then, before any call; *reload*: one",
        "more copy dropped into the directory until `/healthz` counts it (the watcher's 200 ms settle, reading and",
        "hashing every file, compiling the new one, linking all); *call*: wrk's median for `probe-0000.add` with",
        f"one connection, {growth['seconds']} s. The host with no service: {kib(alone)} resident. The plot:",
        "[docs/growth.svg](docs/growth.svg).",
        "",
        "| services | start | resident | resident per service | reload | call p50 | resident after the reload and the calls |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in services:
        per = (p["rss_kib"] - alone) / p["services"]
        lines.append(
            f"| {p['services']:,} | {p['start_s'] * 1000:,.0f} ms | {kib(p['rss_kib'])} | {per:,.0f} KiB | "
            f"{p['reload_s'] * 1000:,.0f} ms | {p['call_p50_us']:,.0f} µs | {kib(p['rss_after_calls_kib'])} |"
        )
    rows = growth["rows"]
    lines += [
        "",
        "Rows a scope reads and keeps: `bench.read-rows(n)` reads the rows of `blobs` whose rowid is at most `n`",
        "(the table holds 100,000 and more) and queues one insert. wrk's median, one connection. The serializable",
        "host keeps the read and runs it again at save; the read-committed host keeps nothing; the dry run is",
        "the serializable host without a save. *check at save*: serializable − read-committed.",
        "",
        "| rows | serializable | read-committed | dry run | check at save | serializable / read-committed |",
        "|---|---|---|---|---|---|",
    ]
    for p in rows:
        ser, rc, dry = p["serializable_p50_us"], p["read-committed_p50_us"], p["dry_run_p50_us"]
        lines.append(
            f"| {p['rows']:,} | {ser:,.0f} µs | {rc:,.0f} µs | {dry:,.0f} µs | {ser - rc:,.0f} µs | {ser / rc:.2f}× |"
        )
    sizes = growth["sizes"]
    lines += [
        "",
        "Request size: `bench.measure(text)` (returns the text's length) with a JSON body of that many bytes, on",
        "the typed route, wrk's median with one connection.",
        "",
        "| body | p50 | req/s | µs per KB above the smallest |",
        "|---|---|---|---|",
    ]
    for p in sizes:
        extra = (p["p50_us"] - sizes[0]["p50_us"]) / max((p["bytes"] - sizes[0]["bytes"]) / 1000, 1e-9)
        lines.append(
            f"| {p['bytes']:,} B | {p['p50_us']:,.0f} µs | {p['rps']:,.0f} | "
            f"{'' if p is sizes[0] else f'{extra:.2f}'} |"
        )
    curves = curves_of(growth)
    lines += [
        "",
        "Each curve's shape: *constant* when its last point is within 10% of its first; otherwise the log-log",
        "slope of what it adds above its first point, between its last two points (1 is linear, where the",
        "growth rather than the fixed cost dominates):",
        "",
        "| curve | first → last | slope | shape |",
        "|---|---|---|---|",
    ]
    for title, _, _, series in curves:
        for label, points, unit in series:
            name, slope = shape(points)
            (x0, y0), (x1, y1) = points[0], points[-1]
            lines.append(f"| {title}: {label} | {y0:,.0f} → {y1:,.0f} {unit} | {slope:.2f} | {name} |")
    lines.append("")
    goals = []
    first, last = services[0], services[-1]
    if last["services"] > first["services"]:
        per = (last["rss_kib"] - first["rss_kib"]) / (last["services"] - first["services"]) * 1024 / 1000
        goals.append((
            "A loaded service nobody calls, resident memory",
            f"{per:,.0f} KB ({first['services']:,} → {last['services']:,} services)", "≤ 100 KB", per <= 100,
        ))
    goals.append((
        f"Start with {last['services']:,} services, warm cache",
        f"{last['start_s']:.2f} s", "< 1 s", last["start_s"] < 1.0,
    ))
    return lines, goals


def curves_of(growth):
    """The plot's panels: (title, x label, y label, [(series, [(x, y)], unit)])."""
    services = growth["services"]["points"]
    rows = growth["rows"]
    sizes = growth["sizes"]
    n = [p["services"] for p in services]
    return [
        ("Services loaded", "services", "ms / MiB", [
            ("start (ms)", list(zip(n, [p["start_s"] * 1000 for p in services])), "ms"),
            ("resident (MiB)", list(zip(n, [p["rss_kib"] / 1024 for p in services])), "MiB"),
            ("reload (ms)", list(zip(n, [p["reload_s"] * 1000 for p in services])), "ms"),
        ]),
        ("A call with N services loaded", "services", "µs", [
            ("call p50", list(zip(n, [p["call_p50_us"] for p in services])), "µs"),
        ]),
        ("Rows read and kept", "rows", "µs", [
            ("serializable", [(p["rows"], p["serializable_p50_us"]) for p in rows], "µs"),
            ("read-committed", [(p["rows"], p["read-committed_p50_us"]) for p in rows], "µs"),
        ]),
        ("Request size", "bytes", "µs", [
            ("typed call p50", [(p["bytes"], p["p50_us"]) for p in sizes], "µs"),
        ]),
    ]


COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def svg(path, out):
    """The plot: one log-log panel per curve family."""
    growth = json.load(open(path))
    if "skipped" in growth:
        return False
    panels = curves_of(growth)
    width, height, cols = 460, 320, 2
    rows_n = math.ceil(len(panels) / cols)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width * cols}" height="{height * rows_n}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width * cols}" height="{height * rows_n}" fill="white"/>',
    ]
    for i, (title, xlabel, ylabel, series) in enumerate(panels):
        ox, oy = (i % cols) * width, (i // cols) * height
        left, right, top, bottom = ox + 70, ox + width - 40, oy + 40, oy + height - 50
        xs = [x for _, pts, _ in series for x, _ in pts]
        ys = [y for _, pts, _ in series for _, y in pts if y > 0]
        x0, x1 = math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs)))
        # Room above the highest point for the legend.
        y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys) * 4))
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)

        def px(x, x0=x0, x1=x1, left=left, right=right):
            return left + (math.log10(x) - x0) / (x1 - x0) * (right - left)

        def py(y, y0=y0, y1=y1, top=top, bottom=bottom):
            return bottom - (math.log10(max(y, 10 ** y0)) - y0) / (y1 - y0) * (bottom - top)

        parts.append(f'<text x="{ox + width / 2}" y="{oy + 22}" text-anchor="middle" font-weight="bold">{title}</text>')
        parts.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#888"/>')
        for e in range(x0, x1 + 1):
            x = px(10 ** e)
            parts.append(f'<line x1="{x}" y1="{top}" x2="{x}" y2="{bottom}" stroke="#eee"/>')
            parts.append(f'<text x="{x}" y="{bottom + 16}" text-anchor="middle">{10 ** e:,}</text>')
        for e in range(y0, y1 + 1):
            y = py(10 ** e)
            parts.append(f'<line x1="{left}" y1="{y}" x2="{right}" y2="{y}" stroke="#eee"/>')
            label = f"{10 ** e:,}" if e >= 0 else f"{10 ** e:g}"
            parts.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{label}</text>')
        parts.append(f'<text x="{(left + right) / 2}" y="{bottom + 36}" text-anchor="middle">{xlabel} (log)</text>')
        parts.append(
            f'<text x="{ox + 16}" y="{(top + bottom) / 2}" text-anchor="middle" '
            f'transform="rotate(-90 {ox + 16} {(top + bottom) / 2})">{ylabel} (log)</text>'
        )
        for j, (label, points, _) in enumerate(series):
            colour = COLOURS[j % len(COLOURS)]
            coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
            for x, y in points:
                parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
            name, slope = shape(points)
            parts.append(
                f'<text x="{left + 8}" y="{top + 16 + 15 * j}" fill="{colour}">{label}: {name} (slope {slope:.2f})</text>'
            )
    parts.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")
    return True
