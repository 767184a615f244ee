"""1,000 DHCP clients at once against 1 server on SQLite, 1 server on PostgreSQL and 2 servers
on one PostgreSQL: `oneroot serve` processes in namespaces on one bridge
(`oneroot.testing.multiserver`), the clients from `oneroot.testing.dhcpstorm` (one socket,
1,000 MACs, broadcast). Needs root.

    .venv/bin/python bench/multiserver/bench_servers.py [--clients 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from oneroot.testing.multiserver import serve_cluster
from oneroot.testing.postgres import running_postgres

sys.path.insert(0, str(Path(__file__).parent))
from bench_db_dora import machine

SETUPS = (("sqlite", 1), ("postgresql", 1), ("postgresql", 2))


def one_run(engine: str, servers: int, clients: int, url: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, \
            serve_cluster(Path(tmp), url, servers=servers) as cluster:
        result = cluster.storm(clients, timeout=120)
    bound = sorted(got["bound_at"] for got in result["leases"].values() if got["ip"])
    per_server = Counter(got["server"] for got in result["leases"].values() if got["server"])
    return {"engine": engine, "servers": servers, "clients": clients,
            "bound": result["bound"], "seconds": result["seconds"], "naks": result["naks"],
            "bound_p50": bound[len(bound) // 2] if bound else None,
            "bound_p95": bound[int(len(bound) * 0.95)] if bound else None,
            "acks_per_server": dict(per_server)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    rows = []
    with running_postgres() as pg:
        for engine, servers in SETUPS:
            runs = [one_run(engine, servers, args.clients,
                            None if engine == "sqlite" else pg.new_schema_url())
                    for _ in range(args.runs)]
            for run in runs:
                print(json.dumps(run), file=sys.stderr)
            median = statistics.median(r["seconds"] for r in runs)
            rows.append({**min(runs, key=lambda r: abs(r["seconds"] - median)),
                         "all_seconds": [r["seconds"] for r in runs]})
    doc = {"command": " ".join(["bench/multiserver/bench_servers.py", *sys.argv[1:]]),
           "machine": machine(), "rows": rows}
    (args.out / "multiserver-servers.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
