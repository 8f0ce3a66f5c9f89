"""Run real Airflow 3.3 components as subprocesses, for tests.

``AirflowDeployment`` builds a throw-away Airflow installation under a directory the caller
owns (typically pytest's ``tmp_path``) and starts the components a test needs, each as its
own subprocess in its own session (so its whole process group can be signalled)::

    airflow db migrate                          # once, in __init__ / __enter__
    airflow api-server -H 127.0.0.1 -p PORT     # REST API + Execution API, loopback only
    airflow scheduler --skip-serve-logs         # LocalExecutor runs the tasks
    airflow dag-processor                       # parses DAGs, runs DAG-level callbacks
    airflow triggerer --skip-serve-logs         # deferred tasks, only when a test needs it
    airflow flow-webhooks dispatcher            # sends flow webhooks from the ledger, when a test needs it

``airflow`` is the console script next to the running interpreter (``python -m airflow``
if there is none), so the components use the same virtualenv as the tests.

Why these flags:

* ``-H 127.0.0.1``: the API server binds ``0.0.0.0`` by default; tests may only use loopback.
* ``--skip-serve-logs``: otherwise the scheduler and the triggerer each fork a log server
  bound to every interface (ports 8793 / 8794); the task logs are read from disk here.
* ``airflow standalone`` is never used: it runs ``airflow scheduler`` and ``airflow triggerer``
  without ``--skip-serve-logs``, so it starts those log servers.

Key environment variables (see ``_airflow_env``); the inherited environment is stripped of
every ``AIRFLOW*`` variable first, so a developer's own Airflow set-up cannot leak in:

* ``AIRFLOW_HOME=<dir>/airflow-home``, ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///.../airflow.db``,
  ``AIRFLOW__CORE__EXECUTOR=LocalExecutor``, ``AIRFLOW__CORE__LOAD_EXAMPLES=False``,
  ``AIRFLOW__CORE__DAGS_FOLDER=<caller's folder>``.
* ``AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:PORT/execution/``: where task
  supervisors (and their task-level callbacks) talk to the Execution API.
* ``AIRFLOW__API__BASE_URL=http://127.0.0.1:PORT``, ``AIRFLOW__API__HOST=127.0.0.1``,
  ``AIRFLOW__API__PORT=PORT``.
* ``AIRFLOW__API_AUTH__JWT_SECRET`` / ``AIRFLOW__API__SECRET_KEY`` / ``AIRFLOW__CORE__FERNET_KEY``:
  random per deployment and set explicitly, so every component and CLI call agrees on them
  whatever ``airflow.cfg`` holds (the scheduler signs the task tokens the API server
  validates); 64 bytes, as the 22-character generated secret makes PyJWT warn.
* ``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,viewer:viewer"`` (``user:role``)
  and ``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE``: a JSON ``{user: password}``
  file written before the API server starts; SimpleAuthManager only generates passwords
  for users missing from it, so the passwords are known to the tests.
* ``AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=5`` (new files in the DAGs folder),
  ``AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL=10``, ``..._PARSING_PROCESSES=1``,
  ``AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC=2`` and ``..._JOB_HEARTBEAT_SEC=2``: runs start
  and the health endpoint turns healthy within seconds instead of minutes.
* ``AIRFLOW__LOGGING__DAG_PROCESSOR_LOG_TARGET=stdout``: DAG-parsing and DAG-level callback
  logs (including exceptions raised by callbacks, which Airflow only logs) land in
  ``logs-components/dag-processor.log`` instead of per-file logs.
* ``AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK=False``: no health server on ``0.0.0.0:8974``.
* Anything in ``extra_env`` (``AIRFLOW_CONN_*``, ``AIRFLOW__CORE__TEST_CONNECTION`` ...) last.

Each component writes stdout and stderr to ``AIRFLOW_HOME/logs-components/<name>.log``.
``cli()`` runs one-off commands (``airflow dags list``, ``airflow connections test ID``) with
the same environment, also in a session of its own.
``stop()`` (also run by ``__exit__``) sends SIGTERM to every component's process group,
SIGKILLs what is left after 15 s, including descendants that moved to their own process
group (the task supervisor puts each task process in a new group), and raises if
anything survives.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import requests

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", "dispatcher")
TERMINAL_RUN_STATES = frozenset({"success", "failed"})

# The job each component records a heartbeat for, as named by /api/v2/monitor/health.
_HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
_STOP_GRACE_SECONDS = 15.0
_KILL_GRACE_SECONDS = 5.0
_HTTP_TIMEOUT = 10.0


def free_loopback_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _airflow_command() -> list[str]:
    script = Path(sys.executable).parent / "airflow"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "airflow"]


def _proc_stat(pid: int) -> tuple[int, int, str, int] | None:
    """Return ``(ppid, pgid, state, start_time)`` of a live Linux process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[2]), fields[0], int(fields[19])


def _all_processes() -> dict[int, tuple[int, int, str, int]]:
    processes = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            processes[int(entry.name)] = stat
    return processes


def _tree(process: subprocess.Popen[Any]) -> dict[int, int]:
    """Return ``{pid: start_time}`` of a process, its process group and all their descendants."""
    processes = _all_processes()
    found = {
        pid: start
        for pid, (_, pgid, state, start) in processes.items()
        if pgid == process.pid and state != "Z"
    }
    # Once reaped, the leader's pid may belong to an unrelated process.
    if process.poll() is None and process.pid in processes:
        found[process.pid] = processes[process.pid][3]
    frontier = list(found)
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, state, start) in processes.items():
            if ppid == parent and pid not in found and state != "Z":
                found[pid] = start
                frontier.append(pid)
    return found


def _alive(tracked: Mapping[int, int]) -> dict[int, int]:
    """Return the tracked processes that still run (same pid *and* start time, not a zombie)."""
    alive = {}
    for pid, start in tracked.items():
        stat = _proc_stat(pid)
        if stat is not None and stat[3] == start and stat[2] != "Z":
            alive[pid] = start
    return alive


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_gone(processes: Sequence[subprocess.Popen[Any]], tracked: Mapping[int, int], grace: float) -> None:
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if all(process.poll() is not None for process in processes) and not _alive(tracked):
            return
        time.sleep(0.2)


def _terminate(processes: Sequence[subprocess.Popen[Any]]) -> set[int]:
    """Stop processes started with ``start_new_session=True``, with everything they started.

    SIGTERM to each process group, then SIGKILL after a grace period to whatever is left,
    including descendants that moved to a process group of their own.

    :return: the pids still alive afterwards (empty when all went away).
    """
    tracked: dict[int, int] = {}
    for process in processes:
        tracked.update(_tree(process))
        _signal_group(process.pid, signal.SIGTERM)
    _wait_gone(processes, tracked, _STOP_GRACE_SECONDS)
    for process in processes:
        tracked.update(_tree(process))
        _signal_group(process.pid, signal.SIGKILL)
    for pid in _alive(tracked):
        # Task processes lead their own group; take that group down with them.
        _signal_group(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(processes, tracked, _KILL_GRACE_SECONDS)
    leftovers = set(_alive(tracked))
    for process in processes:
        leftovers.update(_tree(process))
    return leftovers


@dataclasses.dataclass(frozen=True)
class _Component:
    name: str
    process: subprocess.Popen[bytes]
    log_file: IO[bytes]


class AirflowDeployment:
    """A temporary Airflow 3 installation whose components run as real subprocesses.

    :param base_dir: directory owned by the caller; ``AIRFLOW_HOME`` is created inside it.
    :param dags_folder: the DAGs folder of the ``dags-folder`` bundle.
    :param users: SimpleAuthManager users as ``user:role`` pairs, comma separated.
    :param passwords: password per user; a user without one gets its name as password.
    :param extra_env: variables added last to the components' environment.
    :param port: API server port; a free loopback port by default.

    Usage::

        with AirflowDeployment(tmp_path, dags_folder) as airflow:
            airflow.start("api-server", "scheduler", "dag-processor")
            airflow.wait_for_dag("my_dag", timeout=180)
            run_id = airflow.trigger("my_dag")
            assert airflow.wait_for_run("my_dag", run_id, timeout=180) == "success"
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        dags_folder: str | os.PathLike[str],
        *,
        users: str = "admin:admin,viewer:viewer",
        passwords: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.home = Path(base_dir) / "airflow-home"
        self.dags_folder = Path(dags_folder)
        self.port = port if port is not None else free_loopback_port()
        self.api_url = f"http://127.0.0.1:{self.port}"
        self.users = dict(user.strip().split(":", 1) for user in users.split(",") if user.strip())
        self.passwords = {user: (passwords or {}).get(user, user) for user in self.users}
        self.passwords_file = self.home / "simple_auth_manager_passwords.json"
        self.component_log_dir = self.home / "logs-components"
        self.env = self._airflow_env(users, extra_env or {})
        self._components: dict[str, _Component] = {}
        self._admin_token: str | None = None
        self._migrated = False

    def _airflow_env(self, users: str, extra_env: Mapping[str, str]) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.home / "plugins"),
                "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": users,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__LOGGING__DAG_PROCESSOR_LOG_TARGET": "stdout",
            }
        )
        env.update(extra_env)
        return env

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> AirflowDeployment:
        try:
            self.migrate()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.dump_logs()
        try:
            self.stop()
        except RuntimeError as stop_error:
            if exc is None:
                raise
            # Do not hide the test's own failure behind the clean-up one.
            print(f"AirflowDeployment.stop() failed: {stop_error}", file=sys.stderr)

    def migrate(self, timeout: float = 300) -> None:
        """Create ``AIRFLOW_HOME``, the passwords file and the metadata DB (once)."""
        if self._migrated:
            return
        for folder in (self.home, self.component_log_dir, self.home / "plugins", self.dags_folder):
            folder.mkdir(parents=True, exist_ok=True)
        self.passwords_file.write_text(json.dumps(self.passwords) + "\n")
        self.cli("db", "migrate", timeout=timeout)
        self._migrated = True

    def cli(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``airflow *args`` against this deployment and return the completed process.

        The command runs in its own session and its process group is stopped afterwards,
        also on timeout or KeyboardInterrupt.

        :raises TimeoutError: if the command does not finish within ``timeout`` seconds.
        :raises RuntimeError: if ``check`` and the command exits non-zero; the output is in the message.
        """
        command = [*_airflow_command(), *args]
        with subprocess.Popen(
            command,
            env=self.env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as process:
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _terminate([process])
                stdout, stderr = process.communicate(timeout=_KILL_GRACE_SECONDS)
                raise TimeoutError(
                    f"`airflow {' '.join(args)}` did not finish within {timeout:.0f} s\n"
                    f"--- stdout ---\n{stdout[-4000:]}\n--- stderr ---\n{stderr[-4000:]}"
                ) from None
            except BaseException:
                _terminate([process])
                raise
            leftovers = _terminate([process])
        if leftovers:
            raise RuntimeError(f"`airflow {' '.join(args)}` left processes behind: {sorted(leftovers)}")
        if check and process.returncode != 0:
            raise RuntimeError(
                f"`airflow {' '.join(args)}` exited {process.returncode}\n"
                f"--- stdout ---\n{stdout[-4000:]}\n--- stderr ---\n{stderr[-4000:]}"
            )
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    def start(self, *components: str, timeout: float = 240) -> None:
        """Start the given components and wait until the API server reports them healthy.

        :param components: names from ``COMPONENTS``; already running ones are left alone.
        :param timeout: seconds to wait for the health endpoint.
        :raises RuntimeError: if a component exits, or is not healthy in time.
        """
        unknown = set(components) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"Unknown components {sorted(unknown)}; choose from {COMPONENTS}.")
        self.migrate()
        for name in components:
            if name not in self._components:
                self._spawn(name)
        if "api-server" in self._components:
            self._wait_healthy([name for name in components if name in _HEALTH_KEYS], timeout)
        if "dispatcher" in components:
            self.wait_for_dispatcher(timeout)

    def wait_for_dispatcher(self, timeout: float = 120) -> None:
        """Wait until the ledger holds a fresh dispatcher heartbeat (callbacks then leave sending to it)."""
        deadline = time.monotonic() + timeout
        status: Any = None
        while time.monotonic() < deadline:
            self._check_alive()
            done = self.provider_cli("status", "-o", "json", check=False)
            if done.returncode == 0:
                status = json.loads(done.stdout)
                if status["mode"] == "dispatcher":
                    return
            time.sleep(1)
        raise RuntimeError(f"no dispatcher heartbeat within {timeout:.0f} s; last status: {status}")

    def provider_cli(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``flow-webhook *args`` (the provider's own CLI, clean stdout) against this deployment."""
        return subprocess.run(
            [sys.executable, "-m", "airflow_webhook_provider", *args],
            env=self.env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def _spawn(self, name: str) -> None:
        self.start_process(
            name,
            *{
                "api-server": ["api-server", "-H", "127.0.0.1", "-p", str(self.port)],
                "scheduler": ["scheduler", "--skip-serve-logs"],
                "dag-processor": ["dag-processor"],
                "triggerer": ["triggerer", "--skip-serve-logs"],
                "dispatcher": ["flow-webhooks", "dispatcher"],
            }[name],
        )

    def start_process(self, name: str, *arguments: str) -> None:
        """Start ``airflow *arguments`` as a component called ``name`` (e.g. a second dispatcher, a Celery worker).

        It is stopped with the others, its log is ``logs-components/<name>.log``.
        """
        log_file = (self.component_log_dir / f"{name}.log").open("ab")
        try:
            process = subprocess.Popen(
                [*_airflow_command(), *arguments],
                env=self.env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except BaseException:
            log_file.close()
            raise
        self._components[name] = _Component(name, process, log_file)

    def _wait_healthy(self, job_components: Iterable[str], timeout: float) -> None:
        pending = set(job_components)
        deadline = time.monotonic() + timeout
        last_seen: Any = None
        while True:
            self._check_alive()
            try:
                response = requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=_HTTP_TIMEOUT)
                last_seen = response.status_code
                if response.ok:
                    health = response.json()
                    last_seen = health
                    if all(health[_HEALTH_KEYS[name]]["status"] == "healthy" for name in pending):
                        return
            except requests.RequestException as error:
                last_seen = repr(error)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Airflow was not healthy within {timeout:.0f} s (waiting for api-server and "
                    f"{sorted(pending)}); last health answer: {last_seen}"
                )
            time.sleep(1)

    def _check_alive(self) -> None:
        for component in self._components.values():
            code = component.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"Airflow {component.name} exited with code {code}; last log lines:\n"
                    + self.log_tail(component.name)
                )

    def kill(self, name: str) -> None:
        """SIGKILL one component with its whole process tree (an outage); ``start(name)`` brings it back."""
        component = self._components.pop(name)
        try:
            tracked = _tree(component.process)
            _signal_group(component.process.pid, signal.SIGKILL)
            for pid in tracked:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _wait_gone([component.process], tracked, _KILL_GRACE_SECONDS)
        finally:
            component.log_file.close()

    def stop(self) -> None:
        """Stop every started component with its whole process tree (see ``_terminate``).

        :raises RuntimeError: if a process of a component is still alive afterwards.
        """
        components, self._components = list(self._components.values()), {}
        try:
            leftovers = _terminate([component.process for component in components])
        finally:
            for component in components:
                component.log_file.close()
        if leftovers:
            raise RuntimeError(f"Airflow processes survived SIGKILL: {sorted(leftovers)}")

    # -- diagnostics -------------------------------------------------------------------------

    def log_tail(self, name: str, n: int = 80) -> str:
        """Return the last ``n`` lines of a component's log (empty if it never started)."""
        path = self.component_log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])

    def dump_logs(self, n: int = 80) -> None:
        """Print the tail of every component log to stderr."""
        for path in sorted(self.component_log_dir.glob("*.log")):
            tail = self.log_tail(path.stem, n)
            if tail:
                print(f"\n===== {path.stem} (last {n} lines) =====\n{tail}", file=sys.stderr)

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """Return a task attempt's log, read from ``AIRFLOW_HOME/logs`` (empty if absent)."""
        path = (
            self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        ) / f"attempt={try_number}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- REST API ----------------------------------------------------------------------------

    def token(self, username: str, password: str) -> str:
        """Log in to SimpleAuthManager (``POST /auth/token``) and return the JWT access token."""
        response = requests.post(
            f"{self.api_url}/auth/token",
            json={"username": username, "password": password},
            timeout=_HTTP_TIMEOUT,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def _admin_headers(self) -> dict[str, str]:
        if self._admin_token is None:
            admin = next((user for user, role in self.users.items() if role.lower() == "admin"), None)
            if admin is None:
                raise RuntimeError("No user with the admin role; add one to `users`.")
            self._admin_token = self.token(admin, self.passwords[admin])
        return {"Authorization": f"Bearer {self._admin_token}"}

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call the REST API at ``path`` (e.g. ``/api/v2/dags``) as the admin user."""
        return requests.request(
            method,
            f"{self.api_url}{path}",
            headers=self._admin_headers(),
            timeout=_HTTP_TIMEOUT,
            **kwargs,
        )

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict[str, Any]:
        """Wait until the DAG is parsed and serialized, and return its REST representation.

        :raises TimeoutError: with the current import errors in the message.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            response = self.api("GET", f"/api/v2/dags/{dag_id}")
            if response.ok:
                details: dict[str, Any] = response.json()
                return details
            if response.status_code != 404:
                response.raise_for_status()
            if time.monotonic() > deadline:
                errors = self.api("GET", "/api/v2/importErrors").json().get("import_errors", [])
                raise TimeoutError(
                    f"DAG {dag_id!r} not parsed within {timeout:.0f} s; import errors: {errors}"
                )
            time.sleep(1)

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Unpause the DAG, create a manual run and return its run_id."""
        self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
        response = self.api(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": dict(conf or {})}
        )
        response.raise_for_status()
        return str(response.json()["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        """Return the current state of a DAG run."""
        response = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        response.raise_for_status()
        return str(response.json()["state"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 180) -> str:
        """Poll the run about once a second until it is ``success`` or ``failed``; return that state.

        :raises TimeoutError: with the last run and task states in the message.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL_RUN_STATES:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Run {run_id!r} of {dag_id!r} still {state!r} after {timeout:.0f} s; "
                    f"tasks: {self.task_states(dag_id, run_id)}"
                )
            time.sleep(1)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """Return ``{task_id: state}`` of a run; a mapped task instance is keyed ``task_id[map_index]``."""
        response = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        response.raise_for_status()
        states: dict[str, str | None] = {}
        for instance in response.json()["task_instances"]:
            key = instance["task_id"]
            if instance.get("map_index", -1) != -1:
                key = f"{key}[{instance['map_index']}]"
            states[key] = instance["state"]
        return states


__all__ = ["COMPONENTS", "TERMINAL_RUN_STATES", "AirflowDeployment", "free_loopback_port"]


T = TypeVar("T")


def until(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``probe`` every 0.5 s until it returns something other than None, and return that.

    :raises TimeoutError: naming ``what`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f} s")
        time.sleep(0.5)
