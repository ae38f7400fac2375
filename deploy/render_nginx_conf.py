#!/usr/bin/env python3
"""deploy/nginx.conf for an nginx without `resolve` (Debian's 1.22, any VM): the same file with
fixed upstream addresses and the host's own paths.

    python3 deploy/render_nginx_conf.py --upstream 127.0.0.1:8000 [--upstream 10.0.0.7:8000 ...] \\
        [--listen 80] > /etc/nginx/nginx.conf
    nginx -t && systemctl reload nginx

Only what the compose stack needs and a VM cannot have changes; everything else (locations,
limits, timeouts, headers, the request id, the log format) is deploy/nginx.conf's, read at
render time:

- the lines between `# upstream-begin` and `# upstream-end` (the replicas found through
  Docker's DNS, `resolve`: nginx >= 1.27.3) become one `server host:port;` line per upstream;
- the `resolver` and `resolver_timeout` lines (Docker's DNS) go;
- `listen`, `pid`, `error_log` and `access_log` get the given values (the compose file logs to
  the container's stdout/stderr, which a systemd-run nginx cannot open), and optionally `user`
  and the temporary-file directories (a non-root nginx, as in the tests).

A directive that is not found exactly once is an error: a change to deploy/nginx.conf that the
renderer cannot follow fails here (and in the tests), never silently. Standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

CONF = Path(__file__).resolve().parent / "nginx.conf"
BEGIN, END = "# upstream-begin", "# upstream-end"
# nginx's temporary-file directories, all set by `temp_dir` (a non-root nginx cannot use the
# compiled-in /var/lib/nginx/...)
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class RenderError(ValueError):
    """deploy/nginx.conf no longer has what the renderer replaces."""


def _replace_one(text: str, directive: str, value: str) -> str:
    pattern = re.compile(rf"^(?P<indent>[ \t]*){directive}[ \t][^;\n]*;", re.MULTILINE)
    found = pattern.findall(text)
    if len(found) != 1:
        raise RenderError(f"expected one `{directive}` line in nginx.conf, found {len(found)}")
    return pattern.sub(lambda m: f"{m['indent']}{directive} {value};", text)


def _upstream_servers(text: str, upstreams: Sequence[str]) -> str:
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.strip().startswith(BEGIN)]
    ends = [i for i, line in enumerate(lines) if line.strip().startswith(END)]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise RenderError(f"expected one `{BEGIN}` line followed by one `{END}` line")
    indent = lines[begins[0]][: len(lines[begins[0]]) - len(lines[begins[0]].lstrip())]
    servers = [f"{indent}server {address};\n" for address in upstreams]
    return "".join(lines[: begins[0]] + servers + lines[ends[0] + 1 :])


def render(
    conf: str,
    upstreams: Sequence[str],
    *,
    listen: str,
    pid: str,
    error_log: str,
    access_log: str,
    user: str | None = None,
    temp_dir: str | None = None,
) -> str:
    """`conf` (deploy/nginx.conf's text) with `upstreams` (`host:port`, at least one) as fixed
    servers and the given paths; see the module docstring."""
    if not upstreams:
        raise RenderError("at least one upstream address is needed")
    for address in upstreams:
        if not re.fullmatch(
            r"[A-Za-z0-9.\-]+:\d{1,5}|\[[0-9A-Fa-f:.]+\]:\d{1,5}|unix:/[A-Za-z0-9_./\-]+", address
        ):
            raise RenderError(f"not a host:port (or unix:/path) upstream: {address!r}")
    text = _upstream_servers(conf, upstreams)
    text, dropped = re.subn(r"^[ \t]*resolver[ \t][^;\n]*;[^\n]*\n", "", text, flags=re.M)
    if dropped != 1:
        raise RenderError(f"expected one `resolver` line in nginx.conf, found {dropped}")
    text = re.sub(r"^[ \t]*resolver_timeout[ \t][^;\n]*;[^\n]*\n", "", text, flags=re.M)
    text = _replace_one(text, "listen", listen)
    text = _replace_one(text, "pid", pid)
    text = _replace_one(text, "error_log", f"{error_log} warn")
    text = _replace_one(text, "access_log", f"{access_log} json")
    head: list[str] = []
    if user:
        head.append(f"user {user};\n")
    if temp_dir:
        paths = "".join(f"    {kind}_temp_path {temp_dir}/{kind};\n" for kind in TEMP_PATHS)
        text, found = re.subn(r"^http \{\n", lambda m: m[0] + paths, text, flags=re.M)
        if found != 1:
            raise RenderError("expected one `http {` line in nginx.conf")
    return "".join(head) + text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--upstream",
        action="append",
        required=True,
        help="an api server's host:port or unix:/socket/path (repeat for each replica)",
    )
    parser.add_argument("--listen", default="8000", help="`listen` value, e.g. 80 or 10.0.0.2:80")
    parser.add_argument("--pid", default="/run/nginx.pid", help="Debian's systemd unit expects it")
    parser.add_argument("--error-log", default="/var/log/nginx/error.log")
    parser.add_argument("--access-log", default="/var/log/nginx/access.log")
    parser.add_argument("--user", default="www-data", help="worker processes' user ('' for none)")
    parser.add_argument("--temp-dir", default=None, help="default: nginx's compiled-in paths")
    parser.add_argument("--conf", type=Path, default=CONF, help="default: deploy/nginx.conf")
    args = parser.parse_args(argv)
    try:
        rendered = render(
            args.conf.read_text(),
            args.upstream,
            listen=args.listen,
            pid=args.pid,
            error_log=args.error_log,
            access_log=args.access_log,
            user=args.user or None,
            temp_dir=args.temp_dir,
        )
    except RenderError as exc:
        print(f"render_nginx_conf: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
