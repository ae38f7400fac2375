"""bin/bench results.jsonl -> the markdown summary (stdlib only: runs with any python3).

Per scenario the median over rounds of each server's rps, p50 and p99; errors are summed
over rounds (non-2xx answers + socket errors). `checkout` is shopapi's alone (the peer has no
cart): its row counts every request of the cart path, a note below the table gives the
checkouts/s. Usage: python3 bench/summarize.py results.jsonl
"""

from __future__ import annotations

import json
import statistics
import sys

SCENARIOS = (
    "hello",
    "detail_cached",
    "detail_nocache",
    "list_search",
    "search_100k",
    "order_create",
    "checkout",
)
SERVERS = ("peer", "shopapi")


def load(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def median(rows: list[dict], field: str) -> float | None:
    values = [r[field] for r in rows if r.get(field) is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "—" if value is None else format(value, spec)


def errors(rows: list[dict]) -> str:
    if not rows:
        return "—"
    non2xx = sum(r.get("non2xx", 0) for r in rows)
    sock = sum(r.get("socket_errors", 0) for r in rows)
    return f"{non2xx}" + (f" +{sock} sock" if sock else "")


def wrk_table(rows: list[dict]) -> list[str]:
    out = [
        "| scenario | peer rps | shopapi rps | ratio | peer p50/p99 ms | shopapi p50/p99 ms "
        "| errors peer / shopapi |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in SCENARIOS:
        by = {
            s: [r for r in rows if r["server"] == s and r["scenario"] == scenario] for s in SERVERS
        }
        if not any(by.values()):
            continue
        rps = {s: median(by[s], "rps") for s in SERVERS}
        lat = {
            s: f"{fmt(median(by[s], 'p50_ms'), '.1f')} / {fmt(median(by[s], 'p99_ms'), '.1f')}"
            if by[s]
            else "—"
            for s in SERVERS
        }
        ratio = (
            f"×{rps['shopapi'] / rps['peer']:.2f}"
            if rps["peer"] and rps["shopapi"] is not None
            else "—"
        )
        out.append(
            f"| {scenario} | {fmt(rps['peer'])} | {fmt(rps['shopapi'])} | {ratio} "
            f"| {lat['peer']} | {lat['shopapi']} "
            f"| {errors(by['peer'])} / {errors(by['shopapi'])} |"
        )
    return out


def pgbench_lines(records: list[dict], wrk_rows: list[dict]) -> list[str]:
    out = []
    for r in records:
        api = median(
            [w for w in wrk_rows if w["server"] == r["server"] and w["scenario"] == "order_create"],
            "rps",
        )
        share = f"; API order_create = {api / r['tps']:.0%} of it" if api and r["tps"] else ""
        out.append(
            f"- pgbench {r['server']} `{r['script']}` (-M prepared -c {r['clients']} "
            f"-j {r['jobs']}, {r['seconds']} s): **{r['tps']:.0f} tps**, p50/p99 "
            f"{fmt(r.get('p50_ms'), '.1f')} / {fmt(r.get('p99_ms'), '.1f')} ms, "
            f"{r.get('failed', 0)} failed{share}"
        )
    return out


def checkout_lines(wrk_rows: list[dict]) -> list[str]:
    """checkouts/s beside the row's requests/s, and what its non-2xx answers were."""
    rows = [r for r in wrk_rows if r["server"] == "shopapi" and r["scenario"] == "checkout"]
    if not rows:
        return []
    conflicts = sum(r.get("checkout_409", 0) for r in rows)
    empty = sum(r.get("checkout_422", 0) for r in rows)
    other = sum(r.get("other_non2xx", 0) for r in rows)
    return [
        f"- checkout: {fmt(median(rows, 'checkouts_per_s'))} checkouts/s = "
        f"{fmt(median(rows, 'rps'))} requests/s, cart of 1–3 lines (each iteration PUTs "
        "1–3 lines, then POST /api/cart/checkout; wrk "
        f"-t{rows[0].get('threads', '?')} -c{rows[0].get('conn', '?')}: one customer per "
        f"connection); non-2xx: {conflicts} × 409 insufficient_stock (a product ran out: "
        f"rare, the cart is then emptied), {empty} × 422 (an empty cart: must be 0), "
        f"{other} other"
    ]


def rss_lines(records: list[dict]) -> list[str]:
    out = []
    for server in SERVERS:
        mine = [r for r in records if r["server"] == server]
        if mine:
            parts = ", ".join(
                f"{r['phase']}: " + " / ".join(f"{kb / 1024:.0f}" for kb in r["workers_kb"])
                for r in mine
            )
            out.append(f"- peak RSS per worker (VmHWM, MiB) {server}: {parts}")
    return out


def warm_lines(records: list[dict], duration_s: float) -> list[str]:
    out = []
    for server in SERVERS:
        secs = [r["seconds"] for r in records if r["server"] == server]
        if secs:
            out.append(
                f"- detail_cached warm-up (every id once, before each run) {server}: "
                + ", ".join(f"{s:.0f} s" for s in secs)
            )
    late = [r for r in records if r["server"] == "peer" and r["seconds"] + duration_s > 60]
    if late:
        out.append(
            "- ⚠ the peer's warm-up plus run outlasted its 60 s cache entries "
            f"({len(late)} run(s)): some of its 'cached' requests were misses"
        )
    return out


def warnings(wrk_rows: list[dict]) -> list[str]:
    """Answers other than 2xx make a scenario's rps meaningless (409 in orders excepted)."""
    out = []
    for server in SERVERS:
        for scenario in SCENARIOS:
            rows = [r for r in wrk_rows if r["server"] == server and r["scenario"] == scenario]
            bad = sum(r.get("non2xx", 0) + r.get("socket_errors", 0) for r in rows)
            if scenario == "checkout":  # its 409s are the orders' ones, anything else is not
                bad -= sum(r.get("checkout_409", 0) for r in rows)
            if bad and scenario != "order_create":
                total = sum(r.get("requests", 0) for r in rows)
                out.append(
                    f"- ⚠ {server} {scenario}: {bad} of {total} answers were not 2xx "
                    "(or failed): its rps is not comparable, see the server log"
                )
    return out


def seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]] if duration[-1] in units else float(duration)


def main(path: str) -> None:
    records = load(path)
    wrk_rows = [r for r in records if r.get("kind") == "wrk"]
    lines = wrk_table(wrk_rows)
    ledger = [r for r in records if r.get("kind") == "ledger"]
    lines.append("")
    lines += pgbench_lines([r for r in records if r.get("kind") == "pgbench"], wrk_rows)
    lines += checkout_lines(wrk_rows)
    lines += rss_lines([r for r in records if r.get("kind") == "rss"])
    duration = seconds(wrk_rows[0]["duration"]) if wrk_rows else 0.0
    lines += warm_lines([r for r in records if r.get("kind") == "warm"], duration)
    lines += warnings(wrk_rows)
    if ledger:
        bad = [r for r in ledger if not r["ok"]]
        lines.append(
            "- shopapi ledger (`shopapi check-ledger` after each order_create and checkout "
            f"run and after pgbench): {'ok' if not bad else f'{len(bad)} run(s) out of balance'} "
            f"({len(ledger)} check(s))"
        )
    for m in (r for r in records if r.get("kind") == "machine"):
        lines.append(
            f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']:.1f} GiB RAM, "
            f"PostgreSQL {m['postgresql']}, Redis {m['redis']}, load average at start "
            f"{m['loadavg']}; {m['wrk']}, {m['rounds']} round(s) (median), gunicorn "
            f"{m['workers']} × {m['worker_class']} workers (peer: {m['peer_mode']})"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1])
