"""Issue 18 item 8's benchmark: what a login flood does to everything else.

    .venv/bin/python bench/login_flood.py --base http://127.0.0.1:8001 [--duration 15]

Against a running shopapi (bin/bench starts one as production would: `bin/bench --only shopapi
--scenarios login_flood`), with its cache on and its rate limits too high to answer 429:

1. warms the cache for products 1..--products (GET each once);
2. at rest: two probes for --duration s at once, cached product reads (--read-conn connections)
   and /healthz (2 connections), each connection sending one request every --pace-ms ms
   (bench/wrk/paced.lua: a client's wait is measured, not the server's capacity);
3. during a flood: the same probes while `wrk -c--flood-conn` posts wrong-password logins for
   unknown emails as fast as they are answered (bench/wrk/login_flood.lua; each costs a bcrypt
   check of the dummy hash at the server's BCRYPT_ROUNDS, 12 by default, unless the hashing
   queue is full and it is refused 503);
4. control: the same probes while the same connections flood cached product reads
   (GET /api/products/1: like a refused login, one Redis round trip and no SQL, no bcrypt), to
   tell what hashing costs from what any flood of that shape costs (--no-control skips it);
5. prints a table (p50/p99 of each probe in each phase, and the floods' answers) and appends
   one JSON line per run to --results.

Target (issue 18, item 8): cached reads p99 < 50 ms during the flood, /healthz unaffected.
The machine's load average is recorded: other work on it makes the numbers noisy.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

WRK_DIR = Path(__file__).resolve().parent / "wrk"
TARGET_P99_MS = 50.0


def wrk(
    base: str,
    script: str,
    connections: int,
    seconds: float,
    raw: Path,
    threads: int = 1,
    **env: str,
) -> subprocess.Popen:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_DIR / script),
        base + "/",
    ]
    environment = {**os.environ, "WRK_DIR": str(WRK_DIR), **env}
    return subprocess.Popen(
        command, stdout=raw.open("w"), stderr=subprocess.STDOUT, env=environment
    )


def finish(proc: subprocess.Popen, raw: Path) -> dict:
    if proc.wait() != 0:
        sys.exit(f"wrk failed, see {raw}")
    text = raw.read_text()
    result: dict = {}
    for line in text.splitlines():
        if line.startswith("RESULT "):
            result.update(json.loads(line[len("RESULT ") :]))
        elif line.startswith("STATUSES "):
            result["statuses"] = json.loads(line[len("STATUSES ") :])
    if "p99_ms" not in result:
        sys.exit(f"no RESULT line in {raw}")
    return result


def get(conn: http.client.HTTPConnection, path: str) -> int:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return response.status


def warm(base: str, products: int) -> None:
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=10)
    for product_id in range(1, products + 1):
        status = get(conn, f"/api/products/{product_id}")
        if status != 200:
            sys.exit(f"GET /api/products/{product_id} answered {status} before any load")
    conn.close()


def one_failed_login_ms(base: str) -> float:
    """How long one unknown-email login takes at rest (about one check at BCRYPT_ROUNDS)."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=30)
    body = json.dumps({"email": "flood-probe@example.com", "password": "wrong-password"})
    started = time.perf_counter()
    conn.request("POST", "/api/auth/login", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    conn.close()
    if response.status != 401:
        sys.exit(f"an unknown-email login answered {response.status}, expected 401")
    return (time.perf_counter() - started) * 1000


def probes(base: str, args: argparse.Namespace, raw: Path, phase: str) -> dict:
    common = {"N_PRODUCTS": str(args.products), "PACE_MS": str(args.pace_ms)}
    reads_raw, health_raw = raw / f"{phase}-reads.txt", raw / f"{phase}-healthz.txt"
    reads = wrk(
        base, "paced.lua", args.read_conn, args.duration, reads_raw, PROBE="detail", **common
    )
    health = wrk(base, "paced.lua", 2, args.duration, health_raw, PROBE="healthz", **common)
    return {"reads": finish(reads, reads_raw), "healthz": finish(health, health_raw)}


def flooded(base: str, args: argparse.Namespace, raw: Path, phase: str, **env: str):
    """The probes while `wrk -c--flood-conn` floods (logins, or FLOOD_PATH's GETs)."""
    flood_raw = raw / f"{phase}-flooding.txt"
    flood = wrk(
        base,
        "login_flood.lua",
        args.flood_conn,
        args.duration + 4,
        flood_raw,
        threads=args.flood_threads,
        FLOOD_PACE_MS=str(args.flood_pace_ms),
        **env,
    )
    time.sleep(2)  # the flood reaches its pace before the probes start
    during = probes(base, args, raw, phase)
    return during, finish(flood, flood_raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the server, e.g. http://127.0.0.1:8001")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per phase")
    parser.add_argument("--products", type=int, default=1000, help="ids 1..N read (warmed)")
    parser.add_argument("--read-conn", type=int, default=8, help="cached-read connections")
    parser.add_argument("--pace-ms", type=int, default=10, help="pause between a probe's requests")
    parser.add_argument("--flood-conn", type=int, default=32, help="flooding connections")
    parser.add_argument(
        "--flood-pace-ms", type=int, default=0, help="pause between a flooder's attempts (0: none)"
    )
    parser.add_argument("--flood-threads", type=int, default=2, help="wrk threads of the flood")
    parser.add_argument("--no-control", action="store_true", help="skip the control flood")
    parser.add_argument("--raw", default="results/login_flood", help="folder for wrk's outputs")
    parser.add_argument("--results", help="append the run's JSON line to this file")
    args = parser.parse_args()
    base = args.base.rstrip("/")
    raw = Path(args.raw)
    raw.mkdir(parents=True, exist_ok=True)

    login_ms = one_failed_login_ms(base)
    warm(base, args.products)
    loadavg = Path("/proc/loadavg").read_text().split()[:3]
    rest = probes(base, args, raw, "rest")

    during, flood_result = flooded(base, args, raw, "flood")
    control = control_result = None
    if not args.no_control:
        control, control_result = flooded(base, args, raw, "control", FLOOD_PATH="/api/products/1")

    record = {
        "kind": "login_flood",
        "loadavg": loadavg,
        "one_failed_login_ms": round(login_ms, 1),
        "settings": {k: v for k, v in vars(args).items() if k not in ("base", "raw", "results")},
        "rest": rest,
        "flood": during,
        "logins": flood_result,
        "control": control,
        "control_flood": control_result,
        "target_met": during["reads"]["p99_ms"] < TARGET_P99_MS,
    }
    if args.results:
        with open(args.results, "a") as out:
            out.write(json.dumps(record) + "\n")
    print(table(record))


def table(record: dict) -> str:
    lines = [
        f"login flood (load average before: {' '.join(record['loadavg'])}; one failed login at "
        f"rest: {record['one_failed_login_ms']} ms)",
        "",
        "| probe | phase | rps | p50 ms | p99 ms | max ms | non-2xx | socket errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    phases = {"rest": "at rest", "flood": "during the login flood", "control": "control flood"}
    for probe, label in (("reads", "cached product reads"), ("healthz", "/healthz")):
        for phase, phase_label in phases.items():
            if record[phase] is None:
                continue
            r = record[phase][probe]
            lines.append(
                f"| {label} | {phase_label} | "
                f"{r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} | "
                f"{r['non2xx']} | {r['socket_errors']} |"
            )
    logins = record["logins"]
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(logins.get("statuses", {}).items()))
    lines += [
        "",
        f"flood: {logins['requests']} login attempts in {logins['seconds']:.0f} s "
        f"({logins['rps']:.0f}/s; p50 {logins['p50_ms']:.1f} ms, p99 {logins['p99_ms']:.1f} ms); "
        f"answers {statuses}",
    ]
    control = record["control_flood"]
    if control is not None:
        lines.append(
            f"control: {control['requests']} cached reads of one product on the same "
            f"{record['settings']['flood_conn']} connections ({control['rps']:.0f}/s)"
        )
    lines += [
        f"target (cached reads p99 < {TARGET_P99_MS:.0f} ms during the flood): "
        + ("met" if record["target_met"] else "NOT met"),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
