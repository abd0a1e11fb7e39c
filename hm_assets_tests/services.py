"""Servers the integration tests start for themselves: PostgreSQL (Dagster's storage), Redis (the
Celery broker and result backend) and a local S3 (moto, the object store). Each listens on a free
port of 127.0.0.1 only, keeps its files in a temporary folder of its own, and is stopped by its own
process (pg_ctl stops the postmaster of its data folder; Redis by its pid; moto is a thread).

PostgreSQL and Redis are Debian packages (scripts/system-packages installs them for `make test`).
Where one is missing a test skips, unless HM_REQUIRE_SERVERS is set (as `make test` does): then it
fails, so CI never passes by skipping them.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from hm_assets.platform.settings import PROJECT_ROOT
from hm_assets_tests.servers import free_port

DEPLOY_PROFILE = PROJECT_ROOT / "deploy" / "dagster.yaml"


def missing_server(reason: str) -> None:
    """Skip, or fail where the servers are required (HM_REQUIRE_SERVERS: `make test`, CI)."""
    if os.environ.get("HM_REQUIRE_SERVERS"):
        pytest.fail(f"{reason} (make test installs it: scripts/system-packages)")
    pytest.skip(reason)


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in os.environ inside the block (inherited by processes started there), restored after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def start_with_free_port(start, attempts: int = 3):
    """``start(port)`` on a free port; again on another when the port was taken in between."""
    for attempt in range(attempts):
        try:
            return start(free_port())
        except RuntimeError:
            if attempt == attempts - 1:
                raise


# --- PostgreSQL ---------------------------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """Debian keeps the server binaries in /usr/lib/postgresql/<version>/bin (the newest is taken);
    elsewhere they may be on PATH."""

    def version(path: str) -> tuple[int, ...]:
        found = re.search(r"/postgresql/([\d.]+)/", path)
        return tuple(int(p) for p in found.group(1).split(".")) if found else (0,)

    initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    for initdb in reversed(initdbs):
        folder = Path(initdb).parent
        if (folder / "pg_ctl").exists() and (folder / "postgres").exists():
            return folder
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    return None


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path
    port: int
    user: str = "postgres"
    password: str = "hm-recs-test"
    database: str = "hm_dagster"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """A server binary, as the `postgres` OS user when we are root."""
        argv = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv] if shutil.which("runuser") else [
                "su", "-s", "/bin/sh", "postgres", "-c", subprocess.list2cmdline(argv)
            ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            server_log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n{server_log}")
        return done

    def init(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        self._give_to_postgres(password_file)
        self.run(
            "initdb", "-D", str(self.data_dir), "-U", self.user, f"--pwfile={password_file}",
            "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync",
        )

    def start(self) -> None:
        # Loopback only, the socket file in our folder, no fsync (a throw-away cluster).
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -F -c max_connections=100"
        self.run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop", check=False)

    def connect(self, database: str | None = None):
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname=database or self.database
        )

    def create_database(self) -> None:
        connection = self.connect("postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            connection.close()

    def environment(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml's storage section reads."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.database,
        }

    def _give_to_postgres(self, path: Path) -> None:
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(path, account.pw_uid, account.pw_gid)


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL with an empty database; its DAGSTER_PG_* variables set in os.environ."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        missing_server(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on PATH: "
            "apt-get install postgresql"
        )
    root = Path(tempfile.mkdtemp(prefix="hm_recs_pg_"))
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root, but there is no `postgres` OS user to run the server as (Debian's postgresql package creates it)")
        os.chown(root, account.pw_uid, account.pw_gid)
    server = PostgresServer(bin_dir, root, 0)
    started = False
    try:
        server.init()

        def start(port: int) -> None:
            server.port = port
            server.start()

        start_with_free_port(start)
        started = True
        server.create_database()
        with environment(server.environment()):
            yield server
    finally:
        if started or server.data_dir.exists():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def postgres_instance_home(folder: Path, *sections: str) -> Path:
    """A DAGSTER_HOME whose dagster.yaml takes the named sections of deploy/dagster.yaml verbatim
    (the storage always) and launches runs locally (DefaultRunLauncher)."""
    deploy = yaml.safe_load(DEPLOY_PROFILE.read_text())
    config = {"telemetry": {"enabled": False}, "storage": deploy["storage"]}
    config.update({name: deploy[name] for name in sections})
    config["run_launcher"] = {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


# --- Redis ----------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    process: subprocess.Popen
    root: Path
    port: int

    def url(self, database: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        stop_process_group(self.process)


def stop_process_group(process: subprocess.Popen, grace_seconds: float = 30) -> None:
    """SIGTERM to the process group ``process`` leads (started with start_new_session=True), then
    SIGKILL to what is left of it after ``grace_seconds``."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    try:
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived the leader
    except ProcessLookupError:
        pass
    process.wait()


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """Debian's redis-server on a free loopback port: no persistence, its files in a folder of its own."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing_server("redis-server not found on PATH: apt-get install redis-server")
    root = Path(tempfile.mkdtemp(prefix="hm_recs_redis_"))

    def start(port: int) -> RedisServer:
        argv = [
            binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(root), "--save", "",
            "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no", "--logfile", str(root / "redis.log"),
        ]
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None and not redis_answers(port):
            time.sleep(0.1)
        if process.poll() is not None or not redis_answers(port):
            stop_process_group(process)
            log = (root / "redis.log").read_text(errors="replace")[-2000:] if (root / "redis.log").exists() else ""
            raise RuntimeError(f"redis-server did not start on port {port}:\n{log}")
        return RedisServer(process, root, port)

    server = start_with_free_port(start)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- a local S3 (moto) ------------------------------------------------------------------------------


@contextmanager
def running_s3(bucket: str = "hm-recs") -> Iterator[str]:
    """A local S3 (moto) on a loopback port with ``bucket``, dummy credentials and its endpoint in the
    usual AWS variables (s3fs and boto read them); yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        with environment(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        ):
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()
            s3 = s3fs.S3FileSystem()
            # moto keeps its buckets per process, not per server: an earlier module's may be there.
            if not s3.exists(bucket):
                s3.mkdir(bucket)
            yield endpoint
    finally:
        server.stop()
