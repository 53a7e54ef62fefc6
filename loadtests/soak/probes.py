"""What the soak reads in each container, and how the answers are parsed (pure functions).

Every figure comes from the stack itself, never from the load generator's guesses:

- an app container (``APP_PROBE``, run by its own Python): each process's resident memory,
  threads and open file descriptors from /proc (with how many of them are TCP connections to Redis
  or PostgreSQL: the pools'), the container's TCP connections in CLOSE_WAIT (the peer has closed,
  the server has not: a server that stopped reading a socket holds it so until it ends), and the
  container's /metrics (the exporter of
  core/metrics_exporter.py: the asyncio tasks, database pool and open WebSocket gauges its
  processes write);
- Redis (``REDIS_COMMAND``): ``INFO memory``, and one Lua script that counts the keys, the channel
  layer's keys (channels-redis' prefix ``asgi``), its groups (``asgi:group:<name>``, one sorted set
  per group) and their members (the sum of each group's ZCARD). SCAN, not KEYS, so Redis never
  blocks on a large key space;
- Nginx: its TCP sockets from /proc/net/tcp and tcp6 (the image has no Python, and the stack's
  Nginx has no stub_status): established connections on its listening ports (clients) and the
  others (to the app servers).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

LAYER_PREFIX = "asgi"  # channels-redis' default key prefix; the app keeps it

TCP_CLOSE_WAIT = "08"  # /proc/net/tcp's state of a socket whose peer closed and which is still open
# TCP ports of the stack's backends: a socket connected to one is a pooled connection (core/settings).
BACKEND_PORTS = (6379, 5432)  # Redis, PostgreSQL

APP_PROBE = r"""
import json, os, socket, urllib.request
me, processes, error = os.getpid(), [], None
backend = set()  # inodes of the container's sockets connected to Redis or PostgreSQL
close_wait = 0
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                close_wait += fields[3] == TCP_CLOSE_WAIT
                if int(fields[2].rsplit(":", 1)[1], 16) in BACKEND_PORTS:
                    backend.add(fields[9])
    except OSError:
        pass
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == me:
        continue
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
        fds = backends = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            fds += 1
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            backends += target.startswith("socket:[") and target[8:-1] in backend
    except OSError:
        continue  # ended meanwhile
    processes.append({
        "pid": int(pid), "ppid": int(fields["PPid"]), "name": fields["Name"].strip(),
        "command": command[:160], "rss_kib": int((fields.get("VmRSS") or "0 kB").split()[0]),
        "threads": int(fields["Threads"]), "fds": fds, "backend_connections": backends,
    })
url = f"http://{socket.gethostname()}:{os.environ.get('METRICS_PORT') or 9100}/metrics"
try:
    metrics = urllib.request.urlopen(url, timeout=10).read().decode()
except OSError as exc:
    metrics, error = "", f"{url}: {exc}"
print(json.dumps({"processes": processes, "close_wait": close_wait, "metrics": metrics, "error": error}))
""".replace("BACKEND_PORTS", repr(BACKEND_PORTS)).replace("TCP_CLOSE_WAIT", repr(TCP_CLOSE_WAIT))

# KEYS[] is empty; ARGV[1] is the layer's prefix. Returns {keys, layer keys, groups, members}.
REDIS_SCRIPT = """
local prefix, group_prefix = ARGV[1], ARGV[1] .. ":group:"
local cursor, layer, groups, members = "0", 0, 0, 0
repeat
  local reply = redis.call("SCAN", cursor, "MATCH", prefix .. "*", "COUNT", 1000)
  cursor = reply[1]
  for _, key in ipairs(reply[2]) do
    layer = layer + 1
    if string.sub(key, 1, #group_prefix) == group_prefix then
      groups = groups + 1
      members = members + redis.call("ZCARD", key)
    end
  end
until cursor == "0"
return {redis.call("DBSIZE"), layer, groups, members}
"""
REDIS_SEPARATOR = "@@soak@@"
REDIS_COMMAND = (
    "sh",
    "-c",
    f'redis-cli INFO memory && echo {REDIS_SEPARATOR} && redis-cli EVAL "$1" 0 "$2"',
    "sh",
    REDIS_SCRIPT,
    LAYER_PREFIX,
)
NGINX_COMMAND = ("sh", "-c", "cat /proc/net/tcp; cat /proc/net/tcp6 2>/dev/null; true")

# The gauges of the app's /metrics the soak follows (core/metrics.py), summed over label sets.
APP_GAUGES = {
    "asyncio_tasks": "realtime_django_asyncio_tasks",
    "db_pool_connections": "realtime_django_db_pool_connections",
    "db_pool_available": "realtime_django_db_pool_available_connections",
    "websocket_connections": "realtime_django_websocket_connections",
}

_SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)")
TCP_ESTABLISHED, TCP_LISTEN = "01", "0A"


class ProbeError(ValueError):
    """A probe's answer that is not what it should be; the message quotes it."""


def prometheus_sums(text: str) -> dict[str, float]:
    """Prometheus' text format → each metric name's value, summed over its label sets."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_LINE.match(line)
        if match is None:
            continue
        try:
            value = float(match[3])
        except ValueError:
            continue
        sums[match[1]] = sums.get(match[1], 0.0) + value
    return sums


def parse_app(output: str) -> dict[str, Any]:
    """The app probe's JSON → the container's totals and its processes."""
    try:
        report = json.loads(output.strip().splitlines()[-1])
        processes = [
            {
                "pid": int(p["pid"]),
                "name": str(p["name"]),
                "command": str(p["command"]),
                "rss_bytes": int(p["rss_kib"]) * 1024,
                "threads": int(p["threads"]),
                "fds": int(p["fds"]),
                "backend_connections": int(p.get("backend_connections", 0)),
            }
            for p in report["processes"]
        ]
        close_wait = int(report["close_wait"])
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ProbeError(f"app probe answered {output[-300:]!r}: {exc}") from None
    found: dict[str, Any] = {
        "rss_bytes": sum(p["rss_bytes"] for p in processes),
        "threads": sum(p["threads"] for p in processes),
        "fds": sum(p["fds"] for p in processes),
        "backend_connections": sum(p["backend_connections"] for p in processes),
        "close_wait": close_wait,
        "processes": processes,
    }
    if report.get("error"):
        raise ProbeError(f"no /metrics: {report['error']}")
    sums = prometheus_sums(report.get("metrics") or "")
    # A labelled gauge has no sample until its first label set (the first WebSocket): that is 0.
    sums.setdefault(APP_GAUGES["websocket_connections"], 0.0)
    missing = [name for name in APP_GAUGES.values() if name not in sums]
    if missing:
        raise ProbeError(f"/metrics lacks {', '.join(missing)}")
    gauges = {key: sums[name] for key, name in APP_GAUGES.items()}
    found.update(
        asyncio_tasks=gauges["asyncio_tasks"],
        db_pool_connections=gauges["db_pool_connections"],
        db_pool_in_use=gauges["db_pool_connections"] - gauges["db_pool_available"],
        websocket_connections=gauges["websocket_connections"],
    )
    return found


def parse_redis(output: str) -> dict[str, int]:
    """``INFO memory``, the separator, then the script's four integers."""
    info, sep, counts = output.partition(REDIS_SEPARATOR)
    fields = dict(line.strip().split(":", 1) for line in info.splitlines() if ":" in line)
    numbers = [line.strip().removeprefix("(integer) ") for line in counts.splitlines() if line.strip()]
    if not sep or "used_memory" not in fields or len(numbers) != 4:
        raise ProbeError(f"Redis answered {output[-300:]!r}")
    try:
        keys, layer_keys, groups, members = (int(n) for n in numbers)
        return {
            "redis_used_memory_bytes": int(fields["used_memory"]),
            "redis_keys": keys,
            "layer_keys": layer_keys,
            "layer_groups": groups,
            "group_memberships": members,
        }
    except ValueError:
        raise ProbeError(f"Redis answered {output[-300:]!r}") from None


def _sockets(lines: Iterable[str]) -> list[tuple[int, str]]:
    """/proc/net/tcp(6) rows → (local port, state) pairs."""
    found = []
    for line in lines:
        parts = line.split()
        if len(parts) < 4 or ":" not in parts[1] or parts[0] == "sl":
            continue
        try:
            found.append((int(parts[1].rsplit(":", 1)[1], 16), parts[3]))
        except ValueError:
            continue
    return found


def parse_nginx(output: str) -> dict[str, int]:
    """Established TCP connections: on a listening port (clients), and the others (upstreams)."""
    sockets = _sockets(output.splitlines())
    if not sockets:
        raise ProbeError(f"no sockets in Nginx's /proc/net/tcp: {output[-300:]!r}")
    listening = {port for port, state in sockets if state == TCP_LISTEN}
    established = [port for port, state in sockets if state == TCP_ESTABLISHED]
    clients = sum(1 for port in established if port in listening)
    return {"nginx_connections": clients, "nginx_upstream_connections": len(established) - clients}


# The totals of a sample over every app container (a sum), with Redis' and Nginx's figures.
APP_TOTALS = (
    "rss_bytes",
    "fds",
    "backend_connections",
    "close_wait",
    "threads",
    "asyncio_tasks",
    "db_pool_connections",
    "db_pool_in_use",
    "websocket_connections",
)


def totals(apps: Mapping[str, Mapping[str, Any]], redis: Mapping[str, int], nginx: Mapping[str, int]) -> dict:
    summed: dict[str, float] = {key: sum(float(app[key]) for app in apps.values()) for key in APP_TOTALS}
    # What the connections of clients and the app's own files hold, without the pools' connections.
    summed["fds_without_pools"] = summed["fds"] - summed["backend_connections"]
    return {**summed, **redis, **nginx}
