"""PostgreSQL on loopback for the shared servers (the Prefect API and the MLflow tracking server of a
team), from Debian's `postgresql` package (`make postgres` installs it):

    python pipeline/postgres.py start [--dir .postgres] [--port 5433]   # init once, start, create the databases
    python pipeline/postgres.py stop  [--dir .postgres]
    python pipeline/postgres.py urls  [--port 5433]                     # the two connection URLs

One cluster in `--dir` (created by initdb, trust authentication, listening on 127.0.0.1 only), with a
database per server: `prefect` (postgresql+asyncpg://, what Prefect's server reads from
PREFECT_API_DATABASE_CONNECTION_URL) and `mlflow` (postgresql+psycopg2://, MLflow's --backend-store-uri).
initdb refuses to run as root: as root, the cluster belongs to Debian's `postgres` user. SQLite
stays the one-machine default; this is for servers several hosts share.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

USER = "megl"  # the cluster's superuser
DATABASES = ("prefect", "mlflow")


def bindir() -> Path:
    """Debian's server binaries (/usr/lib/postgresql/<major>/bin), newest major first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]), reverse=True)
    if not found:
        sys.exit("postgres: no PostgreSQL server here (Debian's package `postgresql`): run `make postgres`")
    return Path(found[0]).parent


def _as_owner(cmd: list[str], data: Path) -> list[str]:
    """Run as the data folder's owner: `postgres` when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def urls(port: int, host: str = "127.0.0.1") -> dict[str, str]:
    return {"prefect": f"postgresql+asyncpg://{USER}@{host}:{port}/prefect",
            "mlflow": f"postgresql+psycopg2://{USER}@{host}:{port}/mlflow"}


def _ready(port: int) -> bool:
    out = subprocess.run([str(bindir() / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
    return out.returncode == 0


def start(data: Path, port: int, timeout: float = 60) -> dict[str, str]:
    """Initialise (once) and start the cluster, create the databases; returns their URLs."""
    data = Path(data).resolve()
    bins = bindir()
    if not (data / "PG_VERSION").is_file():
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
            data.chmod(0o700)
        out = subprocess.run(_as_owner([str(bins / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
                                        "--encoding=UTF8", "--locale=C"], data), capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"postgres: initdb {data} failed:\n{out.stderr}")
    if not _ready(port):
        log = data / "server.log"
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={data}"
        out = subprocess.run(_as_owner([str(bins / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w",
                                        "-t", str(int(timeout)), "start"], data), capture_output=True, text=True)
        if out.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            sys.exit(f"postgres: could not start the cluster in {data} on port {port}:\n{out.stdout}{out.stderr}{tail}")
    deadline = time.monotonic() + timeout
    while not _ready(port):
        if time.monotonic() > deadline:
            sys.exit(f"postgres: not ready on 127.0.0.1:{port} after {timeout} s")
        time.sleep(0.5)
    for name in DATABASES:
        out = subprocess.run([str(bins / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, name],
                             capture_output=True, text=True)
        if out.returncode != 0 and "already exists" not in out.stderr:
            sys.exit(f"postgres: createdb {name}: {out.stderr}")
    return urls(port)


def stop(data: Path) -> None:
    data = Path(data).resolve()
    if (data / "postmaster.pid").is_file():
        subprocess.run(_as_owner([str(bindir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], data),
                       capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop", "urls"])
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("MEGL_PG_DIR", ".postgres")))
    parser.add_argument("--port", type=int, default=int(os.environ.get("MEGL_PG_PORT", "5433")))
    args = parser.parse_args()
    if args.action == "start":
        found = start(args.dir, args.port)
        print(f"postgres: running on 127.0.0.1:{args.port}, data in {args.dir}")
        for name, url in found.items():
            print(f"  {name}: {url}")
    elif args.action == "stop":
        stop(args.dir)
    else:
        for name, url in urls(args.port).items():
            print(f"{name} {url}")


if __name__ == "__main__":
    main()
