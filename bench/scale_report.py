"""Figures and tables of the scale benchmark: per-phase worker results -> metrics -> ratios ours/peer."""

from __future__ import annotations

import numpy as np

FULL_SPEED_FACTOR = 1.5  # "full speed": latency back under 1.5x the steady p50
FULL_SPEED_WINDOW = 9  # ... for the median of the next 9 queries (and of all the rest)

# key, label, better ("low" or "high"), format
METRICS = [
    ("ingest_records_per_s", "ingest until queryable (records/s)", "high", "{:,.0f}"),
    ("ingest_p50_ms", "query p50 just after ingest (ms)", "low", "{:.2f}"),
    ("ingest_full_speed_s", "queryable to full speed after ingest (s)", "low", "{:.2f}"),
    ("ingest_close_s", "close after ingest (s)", "low", "{:.2f}"),
    ("write10_close_s", "close after a 10-record write (s)", "low", "{:.3f}"),
    ("kill9_open_first_query_s", "kill -9 after add: open + first query (s)", "low", "{:.3f}"),
    ("kill9_full_speed_s", "kill -9 after add: open to full speed (s)", "low", "{:.2f}"),
    ("kill9_found", "kill -9: first answer / killed batch found", "high", "{}"),
    ("open_first_query_s", "open + first query, clean (s)", "low", "{:.3f}"),
    ("open_full_speed_s", "open to full speed, clean (s)", "low", "{:.2f}"),
    ("query_p50_ms", "query p50 (ms)", "low", "{:.2f}"),
    ("recall_at_10", "recall@10", "high", "{:.3f}"),
    ("wide_query_p50_ms", "query p50 (ms) at --wide-ef", "low", "{:.2f}"),
    ("wide_recall_at_10", "recall@10 at --wide-ef", "high", "{:.3f}"),
    ("filter_p50_ms", "cold filter p50 (ms), new range each query", "low", "{:.1f}"),
    ("filter_recall_at_10", "cold filter recall@10", "high", "{:.3f}"),
    ("disk_over_raw", "disk / raw float32", "low", "{:.2f}x"),
    ("rss_ingest_over_raw", "peak RSS ingest / raw", "low", "{:.2f}x"),
    ("rss_query_over_raw", "peak RSS open+queries / raw", "low", "{:.2f}x"),
]


def metrics(phases: dict, raw_bytes: int) -> dict:
    """The table's figures from one system's phase results (None where a phase failed or does not apply)."""
    ingest, opened = phases.get("ingest", {}), phases.get("open", {})
    write10, recovered = phases.get("write10", {}), phases.get("recover", {})
    steady = opened.get("query_p50_ms")
    out = {
        "ingest_records_per_s": ingest.get("records_per_s"),
        "ingest_p50_ms": ingest.get("p50_first_50_after_ms"),
        "ingest_full_speed_s": full_speed_s(ingest.get("trace"), steady, start=0.0),
        "ingest_close_s": ingest.get("close_s"),
        "write10_close_s": write10.get("close_s"),
        "kill9_open_first_query_s": recovered.get("open_first_query_s"),
        "kill9_full_speed_s": full_speed_s(recovered.get("trace"), steady, recovered.get("open_first_query_s")),
        "kill9_found": _found(recovered),
        "open_first_query_s": opened.get("open_first_query_s"),
        "open_full_speed_s": full_speed_s(opened.get("trace"), steady, opened.get("open_first_query_s")),
        "query_p50_ms": steady,
        "recall_at_10": opened.get("recall_at_10"),
        "wide_query_p50_ms": opened.get("wide_query_p50_ms"),
        "wide_recall_at_10": opened.get("wide_recall_at_10"),
        "filter_p50_ms": opened.get("filter_p50_ms"),
        "filter_recall_at_10": opened.get("filter_recall_at_10"),
        "disk_over_raw": _over(phases.get("disk"), raw_bytes),
        "rss_ingest_over_raw": _over(ingest.get("peak_rss_bytes"), raw_bytes),
        "rss_query_over_raw": _over(opened.get("peak_rss_bytes"), raw_bytes),
    }
    errors = [f"{role}: {r['error']}" for role, r in phases.items() if isinstance(r, dict) and "error" in r]
    if errors:
        out["errors"] = errors
    return out


def full_speed_s(trace: list | None, steady_p50_ms: float | None, start: float | None) -> float | str | None:
    """Seconds until queries run at full speed, read from a latency trace ([time, latency] pairs).

    Full speed starts at the first traced query from which both the median of the next
    FULL_SPEED_WINDOW queries and the median of the whole rest of the trace are under
    FULL_SPEED_FACTOR x the steady p50 (two medians, so that one stall of a shared machine neither
    hides a slow phase nor postpones the answer); if that holds from the first traced query, it is
    ``start`` (the time of the first answer). A string when the trace never got there (a longer
    ``--settle-s`` may show when it does); None without a trace.
    """
    if not trace or steady_p50_ms is None or len(trace) < FULL_SPEED_WINDOW:
        return None
    limit = FULL_SPEED_FACTOR * steady_p50_ms / 1000
    latencies = np.array([lat for _, lat in trace])
    for j in range(len(trace) - FULL_SPEED_WINDOW + 1):
        if np.median(latencies[j : j + FULL_SPEED_WINDOW]) <= limit and np.median(latencies[j:]) <= limit:
            return start if j == 0 else trace[j][0]
    return f"> {trace[-1][0]:.1f}"


def print_run(run: dict) -> None:
    systems = list(run["systems"])
    peers = [s for s in systems if s != "ours"]
    ours = run["systems"].get("ours", {}).get("metrics", {})
    header = ["metric"] + systems + ([f"ours/{p}" for p in peers] if "ours" in systems else [])
    rows = []
    for key, label, better, fmt in METRICS:
        row = [label + (" ↑" if better == "high" else " ↓")]
        row += [_fmt(run["systems"][s]["metrics"].get(key), fmt) for s in systems]
        if "ours" in systems:
            row += [_ratio(ours.get(key), run["systems"][p]["metrics"].get(key)) for p in peers]
        rows.append(row)
    print(f"\nN = {run['n']:,} x {run['d']}, {run['dist']} (raw float32 {run['raw_bytes'] / 2**20:,.0f} MiB; "
          f"exact top-1 is the query's source for {run.get('top1_is_source', '?')} of queries)")
    _table(header, rows)
    for s in systems:
        for e in run["systems"][s]["metrics"].get("errors", []):
            print(f"  {s} failed: {e[:60]} ... {e[-500:]}")
    print("  ↑ higher is better, ↓ lower; ours/peer < 1: ours takes less (time, bytes), > 1: more (rate, recall);")
    print("  '> t': not back under 1.5x the clean p50 within the trace (--settle-s)")


def print_growth(runs: list[dict]) -> None:
    """For each distribution measured at several N: metric at the largest N / at the smallest, per system."""
    for dist in sorted({r["dist"] for r in runs}):
        same = sorted((r for r in runs if r["dist"] == dist), key=lambda r: r["n"])
        if len(same) < 2:
            continue
        small, large = same[0], same[-1]
        systems = [s for s in large["systems"] if s in small["systems"]]
        print(f"\nGrowth {small['n']:,} -> {large['n']:,} ({dist}, N grew {large['n'] / small['n']:.0f}x): figure at "
              f"{large['n']:,} / figure at {small['n']:,}")
        rows = [[label] + [_ratio(large["systems"][s]["metrics"].get(key), small["systems"][s]["metrics"].get(key))
                           for s in systems] for key, label, _, _ in METRICS]
        _table(["metric"] + systems, rows)


def print_all(runs: list[dict]) -> None:
    """The tables of saved runs, figures recomputed from the saved phase results."""
    for run in runs:
        for system in run["systems"].values():
            system["metrics"] = metrics(system["phases"], run["raw_bytes"])
        print_run(run)
    print_growth(runs)


def _found(recovered: dict) -> str | None:
    if "first_query_found_own_row" not in recovered:
        return None
    return f"{'yes' if recovered['first_query_found_own_row'] else 'NO'} / {recovered.get('killed_batch_found')}"


def _over(value: float | None, raw: int) -> float | None:
    return None if value is None else round(value / raw, 3)


def _fmt(value, fmt: str) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else fmt.format(value)


def _ratio(a, b) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b == 0:
        return "-"
    return f"{a / b:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(map(str, cells), widths))]
        return "| " + " | ".join(padded) + " |"

    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
