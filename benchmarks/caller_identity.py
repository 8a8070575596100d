"""Benchmark: GetCallerIdentity signed with temporary credentials, against a bare Starlette
form-POST endpoint that returns a similar XML body, measured in the same run.

Both servers run as one uvicorn worker each, with the same uvicorn options; the load comes from
a separate process holding keep-alive connections. Rounds alternate (baseline, broker,
baseline, broker, ...) so that the noise of a shared machine falls on both alike; the figure is
the median over rounds of broker requests per second divided by baseline requests per second.

    .venv/bin/python benchmarks/caller_identity.py [--seconds 5] [--rounds 3] [--connections 16]

Writes benchmarks/results/caller_identity.json and prints a table. Target: ratio >= 0.6.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
RESULTS = HERE / "results" / "caller_identity.json"


# -- the load generator (runs in its own process) -----------------------------------------------


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> int:
    """Send one request and read its whole answer: the status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return int(head[9:12])


async def _connection(host: str, port: int, requests: Iterator[bytes], stop_at: float,
                      latencies: list[float], statuses: dict[int, int], *,
                      one_shot: bool = False) -> None:
    """A client sending requests one after the other: over one kept-open connection, or
    (``one_shot``, for servers that close after every answer) a new connection for each."""
    connection = None if one_shot else await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            request = next(requests, None)
            if request is None:
                break
            started = time.perf_counter()
            if connection is None:
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    status = await _exchange(reader, writer, request)
                finally:
                    writer.close()
            else:
                status = await _exchange(*connection, request)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        if connection is not None:
            connection[1].close()


def _load(host: str, port: int, request: bytes | Sequence[bytes], seconds: float,
          connections: int, one_shot: bool,
          out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    # One request sent again and again, or (for requests that work once, such as a SAML
    # assertion) each of a list once, shared by all connections; the round ends early when the
    # list runs out.
    requests: Iterator[bytes] = (
        itertools.repeat(request) if isinstance(request, bytes) else iter(request))

    async def main() -> None:
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(*(_connection(host, port, requests, stop_at, latencies, statuses,
                                           one_shot=one_shot)
                               for _ in range(connections)))

    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    out.put({"requests": len(latencies), "elapsed": elapsed, "latencies": latencies,
             "statuses": statuses})


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(port: int, request: bytes | Sequence[bytes], seconds: float, connections: int,
            server_pid: int, *, one_shot: bool = False) -> dict[str, float]:
    """Requests per second, latencies and the server's CPU per request, with ``connections``
    clients in another process (``one_shot``: each connecting afresh for every request)."""
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    cpu_before = cpu_seconds(server_pid)
    proc = multiprocessing.Process(target=_load, args=("127.0.0.1", port, request, seconds,
                                                       connections, one_shot, queue))
    proc.start()
    result = queue.get(timeout=seconds + 60)
    cpu = cpu_seconds(server_pid) - cpu_before
    proc.join()
    latencies = sorted(result["latencies"])
    if set(result["statuses"]) != {200}:
        raise SystemExit(f"non-200 answers during the benchmark: {result['statuses']}")
    return {
        "rps": result["requests"] / result["elapsed"],
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "requests": result["requests"],
        "server_cpu_us_per_request": 1e6 * cpu / result["requests"],
    }


# -- the two servers ----------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def raw_request(port: int, headers: dict[str, str], body: bytes) -> bytes:
    lines = ["POST / HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host",)]
    if not any(k.lower() == "content-length" for k in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def start_servers() -> tuple[list[subprocess.Popen[bytes]], int, int, dict[str, Any]]:
    """A fresh broker (file audit sink) and the baseline, each one uvicorn worker, both ready:
    (processes, broker port, baseline port, what ``broker init --json`` printed)."""
    work = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "AWS_"))}
    env["BROKER_AUDIT_SINK"] = "file"
    env["BROKER_AUDIT_PATH"] = str(work / "audit.log")
    init = subprocess.run([str(BIN / "broker"), "init", "--data-dir", str(work / "data"),
                           "--json"], env=env, capture_output=True, text=True, check=True)
    broker_port, baseline_port = free_port(), free_port()
    servers = [
        subprocess.Popen([str(BIN / "broker"), "serve", "--data-dir", str(work / "data"),
                          "--port", str(broker_port)], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True),
        subprocess.Popen([sys.executable, str(HERE / "baseline_app.py"), str(baseline_port)],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True),
    ]
    try:
        wait_ready(f"http://127.0.0.1:{broker_port}/healthz", servers[0])
        wait_ready(f"http://127.0.0.1:{baseline_port}/", servers[1])
    except BaseException:
        stop_servers(servers)
        raise
    created = json.loads(init.stdout)
    created["data_dir"] = str(work / "data")  # for the benchmarks that use the command line
    return servers, broker_port, baseline_port, created


def stop_servers(servers: list[subprocess.Popen[bytes]]) -> None:
    for proc in servers:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def summary_head(benchmark: str, script: str, args: argparse.Namespace,
                 rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """What every benchmark's results file opens with: what ran, how to run it again, on what
    machine, and the figure (the median over rounds of each round's ratio)."""
    return {
        "benchmark": benchmark,
        "command": f"make bench  (.venv/bin/python benchmarks/{script})",
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
        "connections": args.connections,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "ratio": statistics.median(r["ratio"] for r in rounds),
    }


def report(results: Path, head: dict[str, Any], rounds: list[dict[str, Any]],
           parts: Sequence[tuple[str, str]], *, target: float, figure: str) -> dict[str, Any]:
    """Write the results file of a benchmark whose rounds measured several ``parts`` (label,
    key) beside a baseline, and print its table: medians over rounds of each part's figures
    and of ``ratio_to_baseline``."""
    keys = ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_request")
    summary = {
        **head,
        "ratio_to_baseline": statistics.median(r["ratio_to_baseline"] for r in rounds),
        **{key: {k: statistics.median(r[key][k] for r in rounds) for k in keys}
           for _, key in parts},
        "per_round": rounds,
        "target_ratio": target,
    }
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print()
    print(f"{'':20}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'cpu us':>10}")
    for label, key in parts:
        m = summary[key]
        print(f"{label:20}{m['rps']:10.0f}{m['p50_ms']:10.2f}{m['p99_ms']:10.2f}"
              f"{m['server_cpu_us_per_request']:10.1f}")
    print(f"{figure} (median of rounds): {summary['ratio']:.2f}  (target >= {target})")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from tests.helpers import Creds, signed_request

    servers, broker_port, baseline_port, created = start_servers()
    root = created["root"]
    try:
        broker_url = f"http://127.0.0.1:{broker_port}"

        import boto3

        sts = boto3.client("sts", endpoint_url=broker_url, region_name="us-east-1",
                           aws_access_key_id=root["access_key_id"],
                           aws_secret_access_key=root["secret_access_key"])
        c = sts.get_session_token(DurationSeconds=3600)["Credentials"]
        session = Creds(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])

        params = {"Action": "GetCallerIdentity", "Version": "2011-06-15"}

        rounds = []
        for i in range(args.rounds):
            # Sign afresh each round: a signature is good for five minutes. Both servers get
            # the very same request bytes (but for the port in Host), signature and all.
            _, _, headers, signed_body = signed_request(broker_url, params, session)
            broker_request = raw_request(broker_port, headers, signed_body)
            baseline_request = raw_request(baseline_port, headers, signed_body)
            check = httpx.post(broker_url + "/", headers=headers, content=signed_body)
            assert check.status_code == 200 and session.access_key_id and \
                "<GetCallerIdentityResponse" in check.text, check.text
            base = measure(baseline_port, baseline_request, args.seconds, args.connections,
                           servers[1].pid)
            brok = measure(broker_port, broker_request, args.seconds, args.connections,
                           servers[0].pid)
            rounds.append({"baseline": base, "broker": brok,
                           "ratio": brok["rps"] / base["rps"],
                           "cpu_ratio": base["server_cpu_us_per_request"]
                           / brok["server_cpu_us_per_request"]})
            print(f"round {i + 1}: baseline {base['rps']:8.0f} rps "
                  f"{base['server_cpu_us_per_request']:5.1f} us cpu/req   "
                  f"broker {brok['rps']:8.0f} rps {brok['server_cpu_us_per_request']:5.1f} us "
                  f"cpu/req   ratio {rounds[-1]['ratio']:.2f}", flush=True)
    finally:
        stop_servers(servers)

    def med(who: str, key: str) -> float:
        return statistics.median(r[who][key] for r in rounds)

    summary = {
        **summary_head("GetCallerIdentity with temporary credentials vs bare Starlette form POST",
                       "caller_identity.py", args, rounds),
        "cpu_ratio": statistics.median(r["cpu_ratio"] for r in rounds),
        "baseline": {k: med("baseline", k) for k in ("rps", "p50_ms", "p99_ms",
                                                     "server_cpu_us_per_request")},
        "broker": {k: med("broker", k) for k in ("rps", "p50_ms", "p99_ms",
                                                 "server_cpu_us_per_request")},
        "per_round": rounds,
        "target_ratio": 0.6,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    b, k = summary["baseline"], summary["broker"]
    print()
    print(f"{'':10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'baseline':10}{b['rps']:10.0f}{b['p50_ms']:10.2f}{b['p99_ms']:10.2f}")
    print(f"{'broker':10}{k['rps']:10.0f}{k['p50_ms']:10.2f}{k['p99_ms']:10.2f}")
    print(f"ratio (median of rounds): {summary['ratio']:.2f}  (target >= 0.6)")
    print(f"server CPU per request, baseline / broker: {summary['cpu_ratio']:.2f}")


if __name__ == "__main__":
    main()
