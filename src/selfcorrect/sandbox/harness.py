"""Run untrusted Python against tests, isolated, in parallel.

Each worker is one long-lived sandbox: bubblewrap gives it new user, PID, network, IPC
and UTS namespaces, a read-only view of /usr only (no /home, /root, /etc or project
files), a private size-limited /tmp, a minimal /dev and an empty environment; inside it a
trusted zygote forks a fresh test runner and program for every job and kills and wipes
whatever the job left (see zygote.py). When the harness runs as root, each worker runs
under a uid of its own, so that the per-user process limit holds (root is exempt from it)
and workers cannot see or signal one another.

Rlimits on the program: CPU seconds, address space, processes, file size, no core dumps;
plus a wall-clock deadline, after which its process group is killed. The bound on memory
is memory_bytes x processes per worker, plus the scratch space.

Without bubblewrap the sandbox refuses to start, unless the caller opts into
isolation="process": the same runner and limits, with no namespaces, so that the program
can read the file system and use the network. It warns when it starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from selfcorrect.errors import SelfcorrectError
from selfcorrect.sandbox.zygote import Gone, Late, recv_frame, send_frame

log = logging.getLogger(__name__)

ZYGOTE_SOURCE = (Path(__file__).with_name("zygote.py")).read_text()
ISOLATIONS = ("bwrap", "process")
# str and set hashing seeded alike in every worker, so a program prints a set in one order on
# every run: its output becomes feedback in the next prompt, and a prompt that differs for no
# reason is a new draw (a replayed run would not come from the sample cache)
HASH_SEED = "0"
# processes of a worker's uid besides the program's own: bwrap outside and as the
# namespace's init, the zygote, the runner
INFRASTRUCTURE_PROCESSES = 4


class SandboxUnavailable(SelfcorrectError):
    """The sandbox cannot run here as configured."""


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 512 * 2**20
    processes: int = 8
    file_bytes: int = 16 * 2**20  # the largest file the program may write
    output_bytes: int = 16 * 2**10  # stdout and stderr kept, each
    scratch_bytes: int = 64 * 2**20  # size of the private /tmp (fixed when a worker starts)


@dataclass(frozen=True)
class TestCase:
    __test__ = False  # not a pytest test class

    name: str
    code: str


@dataclass(frozen=True)
class TestOutcome:
    __test__ = False

    name: str
    passed: bool
    seconds: float
    timed_out: bool = False
    error_type: str | None = None
    message: str | None = None
    observed: tuple[str, ...] = ()  # the reprs of values the test passed to __observe__


@dataclass(frozen=True)
class RunResult:
    """What happened to one program. `passed` means it loaded and every test passed."""

    loaded: bool
    tests: tuple[TestOutcome, ...]
    load_error: str | None = None
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    limit: str | None = None  # wall, cpu, memory, file size, processes
    exit: str | None = None  # how the program ended, when it ended on its own
    seconds: float = 0.0
    error: str | None = None  # the sandbox lost the job (the program killed its runner)
    tests_run: int = field(default=0)

    @property
    def passed(self) -> bool:
        return self.error is None and self.loaded and bool(self.tests) and all(
            t.passed for t in self.tests)

    @property
    def n_passed(self) -> int:
        return sum(t.passed for t in self.tests)

    def to_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed}


def _result(data: dict, tests: Sequence[TestCase]) -> RunResult:
    if "harness_error" in data:
        error = data["harness_error"]
        message = f"{error.get('type')}: {error.get('message')}"
        return _lost(tests, message)
    outcomes = []
    for raw in data["tests"]:
        error = raw.get("error") or {}
        outcomes.append(TestOutcome(
            name=raw["name"], passed=raw["passed"], seconds=raw.get("seconds", 0.0),
            timed_out=raw.get("timed_out", False), error_type=error.get("type"),
            message=error.get("message"), observed=tuple(raw.get("observed", ()))))
    load_error = data.get("load_error")
    return RunResult(
        loaded=data["loaded"],
        tests=tuple(outcomes),
        load_error=f"{load_error['type']}: {load_error['message']}" if load_error else None,
        stdout=data.get("stdout", ""),
        stderr=data.get("stderr", ""),
        timed_out=data.get("timed_out", False),
        limit=data.get("limit"),
        exit=data.get("exit"),
        seconds=data.get("seconds", 0.0),
        tests_run=len(outcomes),
    )


def _lost(tests: Sequence[TestCase], message: str) -> RunResult:
    return RunResult(
        loaded=False, error=message,
        tests=tuple(TestOutcome(t.name, False, 0.0, error_type="SandboxError", message=message)
                    for t in tests))


class _Worker:
    """One sandbox process (a zygote) and the pipes to it."""

    def __init__(self, command: list[str], env: dict, user: int | None, scratch: str,
                 isolated: bool, nproc: int, cwd: str | None):
        # A scratch folder on the host (isolation "process") is the worker's own, removed with it.
        self.owned_scratch = None if isolated else scratch
        self.stderr = tempfile.TemporaryFile()
        ids = {"user": user, "group": user, "extra_groups": []} if user is not None else {}
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            env=env, cwd=cwd, start_new_session=True, **ids)
        self.scratch = scratch
        try:
            send_frame(self.process.stdin.fileno(), {"scratch": scratch, "isolated": isolated, "nproc": nproc})
            ready = recv_frame(self.process.stdout.fileno(), time.monotonic() + 30)
        except (Gone, Late, OSError):
            ready = {}
        if not ready.get("ready"):
            message = self.stderr_text() or "the sandbox process did not start"
            self.kill()
            raise SandboxUnavailable(
                f"the sandbox could not start: {message}",
                "check that bubblewrap works here (unprivileged user namespaces must be "
                "enabled), or opt into the weaker isolation \"process\"")

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace").strip()[-500:]

    def run(self, job: dict, timeout: float) -> dict:
        send_frame(self.process.stdin.fileno(), job)
        return recv_frame(self.process.stdout.fileno(), time.monotonic() + timeout)

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, 9)
        except ProcessLookupError:
            pass  # already gone
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            stream.close()
        self.stderr.close()
        if self.owned_scratch is not None:
            shutil.rmtree(self.owned_scratch, ignore_errors=True)


class Sandbox:
    """A pool of sandbox workers; `run` is thread-safe and blocks, `arun` awaits.

    workers: programs run at once (default: the CPU count).
    isolation: "bwrap" (default), or "process" to run without namespaces (not safe for
        untrusted code: it can read files and use the network).
    python: the interpreter inside the sandbox (default: /usr/bin/python3 when present,
        since an interpreter under a private home directory is out of the sandbox's reach).
    """

    def __init__(self, workers: int | None = None, limits: Limits = Limits(),
                 isolation: str = "bwrap", python: str | None = None):
        if isolation not in ISOLATIONS:
            raise SandboxUnavailable(f"unknown sandbox isolation {isolation!r}",
                                     f"use one of: {', '.join(ISOLATIONS)}")
        self.workers = workers or os.cpu_count() or 1
        self.limits = limits
        self.isolation = isolation
        self.python = python or _default_python()
        self._root = os.geteuid() == 0
        self._uid_base = 100_000 + (os.getpid() % 5000) * 64  # distinct per harness process
        self._workers: list[_Worker | None] = [None] * self.workers
        self._free: queue.Queue[int] = queue.Queue()
        for slot in range(self.workers):
            self._free.put(slot)
        self._closed = False
        self._lock = threading.Lock()
        self._executor = None
        # bwrap's --die-with-parent ties a sandbox to the *thread* that started it (Linux's
        # parent-death signal), so one thread starts them all and lives as long as we do:
        # a worker whose zygote was stopped or killed then still dies with its bwrap.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="sandbox-spawner")
        if isolation == "bwrap":
            if shutil.which("bwrap") is None:
                raise SandboxUnavailable(
                    "bubblewrap (bwrap) is not installed: untrusted code will not run without it",
                    "install it (`apt-get install bubblewrap`), or opt into the weaker isolation "
                    "\"process\" (no file-system or network isolation)")
        else:
            log.warning("sandbox isolation 'process': untrusted code runs WITHOUT file-system "
                        "or network isolation, with resource limits only")
        self._release(self._checkout())  # start one worker now, so that a broken set-up says so at once

    # -- running ------------------------------------------------------------------------

    def run(self, program: str, tests: Sequence[TestCase | str], setup: str = "",
            limits: Limits | None = None, tests_trusted: bool = True) -> RunResult:
        """Load `program`, then run each test against it. Test code sees the program's names;
        `setup` runs before the tests (imports). Blocks until done.

        tests_trusted: the tests come from a dataset or the user. Tests that a model wrote
        must pass False: they then run in a runner process of their own, under the limits.
        Either way the sandbox holds them, and the program cannot forge their verdict."""
        limits = limits or self.limits
        cases = [t if isinstance(t, TestCase) else TestCase(f"test {i + 1}", t)
                 for i, t in enumerate(tests)]
        nonce = secrets.token_hex(16)
        job = {"program": program, "setup": setup, "nonce": nonce, "tests_trusted": tests_trusted,
               "tests": [{"name": c.name, "code": c.code} for c in cases],
               "limits": {k: v for k, v in asdict(limits).items() if k != "scratch_bytes"},
               "processes": limits.processes, "nproc": self._nproc(limits)}
        slot = self._checkout()
        worker = self._workers[slot]
        try:
            data = worker.run(job, limits.wall_seconds + 8)  # the zygote gives a runner wall + 5
        except (Gone, Late, OSError) as e:
            worker_error = worker.stderr_text()
            self._retire(slot)
            self._release(slot)
            what = "did not answer in time" if isinstance(e, Late) else "was lost"
            return _lost(cases, f"the sandbox {what} (the program may have killed it)"
                                + (f": {worker_error}" if worker_error else ""))
        if data.get("nonce") != nonce:
            self._retire(slot)
            self._release(slot)
            return _lost(cases, "the sandbox answered with the wrong nonce; the worker was replaced")
        if not data.get("clean", False):
            self._retire(slot)  # something outlived the job: the next job gets a fresh worker
        self._release(slot)
        return _result(data, cases)

    async def arun(self, program: str, tests: Sequence[TestCase | str], setup: str = "",
                   limits: Limits | None = None, tests_trusted: bool = True) -> RunResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool(), self.run, program, tests, setup, limits, tests_trusted)

    def run_many(self, jobs: Sequence[tuple[str, Sequence[TestCase | str], str]]) -> list[RunResult]:
        """Run (program, tests, setup) jobs on all workers; results in the jobs' order."""
        return list(self._pool().map(lambda job: self.run(*job), jobs))

    def _pool(self):
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox")
            return self._executor

    @property
    def python_command(self) -> list[str]:
        """The zygote's interpreter line. Not -I, which would ignore PYTHONHASHSEED: its other
        parts are here (-P: no script folder on sys.path, -s: no user site) and the
        environment is set whole, so no other PYTHON* variable reaches it."""
        return [self.python, "-P", "-s", "-B", "-c", ZYGOTE_SOURCE]

    def _nproc(self, limits: Limits) -> int:
        if self.isolation == "bwrap":
            return limits.processes + INFRASTRUCTURE_PROCESSES
        if self._root:
            return limits.processes + 2  # zygote and runner, under a uid of their own
        return _count_processes(os.getuid()) + limits.processes + 32  # shared with the user

    # -- workers ------------------------------------------------------------------------

    def _checkout(self) -> int:
        if self._closed:
            raise SelfcorrectError("the sandbox is closed")
        slot = self._free.get()
        if self._workers[slot] is None:
            try:
                self._workers[slot] = self._spawner.submit(self._start, slot).result()
            except BaseException:
                self._free.put(slot)
                raise
        return slot

    def _release(self, slot: int) -> None:
        self._free.put(slot)

    def _retire(self, slot: int) -> None:
        worker, self._workers[slot] = self._workers[slot], None
        if worker is not None:
            worker.kill()

    def _start(self, slot: int) -> _Worker:
        limits = self.limits
        user = self._uid_base + slot if self._root else None
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": HASH_SEED}
        if self.isolation == "bwrap":
            command = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session",
                       "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
            for top in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
                if os.path.islink(top):
                    command += ["--symlink", os.readlink(top), top]
                elif os.path.isdir(top):
                    command += ["--ro-bind", top, top]
            prefix = _prefix(self.python)
            if prefix != "/usr" and not prefix.startswith("/usr/"):
                command += ["--ro-bind", prefix, prefix]
            command += ["--proc", "/proc", "--dev", "/dev",
                        "--size", str(limits.scratch_bytes), "--tmpfs", "/tmp",
                        "--size", str(4 * 2**20), "--tmpfs", "/dev/shm",
                        "--chdir", "/tmp", "--clearenv",
                        "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
                        "--setenv", "LANG", "C.UTF-8", "--setenv", "TMPDIR", "/tmp",
                        "--setenv", "PYTHONHASHSEED", HASH_SEED, *self.python_command]
            return _Worker(command, env, user, "/tmp", True, self._nproc(limits), None)
        scratch = tempfile.mkdtemp(prefix="selfcorrect-sandbox-")
        if user is not None:
            os.chown(scratch, user, user)
        env |= {"HOME": scratch, "TMPDIR": scratch}
        command = self.python_command
        return _Worker(command, env, user, scratch, False, self._nproc(limits), scratch)

    def close(self) -> None:
        self._closed = True
        for slot in range(self.workers):
            self._retire(slot)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        self._spawner.shutdown(wait=False)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _default_python() -> str:
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3") or "python3"


def _prefix(python: str) -> str:
    """The installation prefix of an interpreter, which the sandbox must see."""
    done = subprocess.run([python, "-I", "-c", "import sys; print(sys.base_prefix)"],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise SandboxUnavailable(f"the sandbox interpreter {python} does not run",
                                 "install python3, or name another interpreter")
    return done.stdout.strip()


def _count_processes(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                continue  # the process ended while we looked
    return count
