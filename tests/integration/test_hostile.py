"""Hostile programs. Every one must be contained, scored as failed, and leave the harness and
the machine as they were. Each test below can only pass if the attack worked."""

import os
import socket
import threading
from pathlib import Path

import pytest

from selfcorrect.sandbox import Limits, Sandbox

pytestmark = pytest.mark.integration

SECRET = "sk-hostile-suite-secret-4711"
HOST_MARKER = Path("/tmp/selfcorrect-hostile-marker")


class Listener:
    """A real TCP server on the host's loopback that counts who reaches it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


@pytest.fixture(scope="module")
def listener():
    server = Listener()
    yield server
    server.sock.close()


@pytest.fixture(scope="module")
def sandbox():
    os.environ["SELFCORRECT_TEST_SECRET"] = SECRET  # the harness's environment holds a secret
    # CPU time above the wall time, so that a busy loop meets the wall deadline first
    limits = Limits(wall_seconds=2, cpu_seconds=4, memory_bytes=256 * 2**20, processes=8,
                    file_bytes=1 * 2**20, scratch_bytes=16 * 2**20)
    with Sandbox(workers=2, limits=limits) as box:
        yield box
    del os.environ["SELFCORRECT_TEST_SECRET"]


def worker_processes(box):
    """Host processes running as the workers' uids (only bwrap and the zygotes should)."""
    uids = {box._uid_base + slot for slot in range(box.workers)} if box._root else {os.getuid()}
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            uid = int(status.split("Uid:")[1].split()[0])
            state = status.split("State:")[1].split()[0]
            if uid in uids and state != "Z":
                found.append(int(entry))
    return found


HOSTILE = {
    "fork bomb": ("import os\nwhile True:\n    os.fork()\n", "assert True", "processes"),
    "thread bomb": ("import threading, time\nwhile True:\n"
                    "    threading.Thread(target=time.sleep, args=(60,)).start()\n", "assert True", "processes"),
    "memory bomb": ("x = bytearray(10 ** 10)\n", "assert True", "memory"),
    "memory creep": ("keep = []\nwhile True:\n    keep.append(' ' * 10 ** 6)\n", "assert True", "memory"),
    "infinite loop while loading": ("while True:\n    pass\n", "assert True", "wall"),
    "infinite loop in a function": ("def f():\n    while True:\n        pass\n", "assert f() == 1", "wall"),
    "sleep forever": ("import time\ndef f():\n    time.sleep(3600)\n", "assert f() == 1", "wall"),
    "deep recursion": ("import sys\nsys.setrecursionlimit(10 ** 8)\n"
                       "def f(n):\n    return f(n + 1)\n", "assert f(0) == 1", None),
    "huge output": ("while True:\n    print('x' * 4096)\n", "assert True", "file size"),
    "fills /tmp": ("import os\ni = 0\nwhile True:\n    open(f'/tmp/f{i}', 'w').write('x' * 10 ** 6)\n"
                   "    i += 1\n", "assert True", None),
    "fills /dev/shm": ("i = 0\nwhile True:\n    open(f'/dev/shm/f{i}', 'w').write('x' * 10 ** 6)\n"
                       "    i += 1\n", "assert True", None),
    "connects to the host's loopback": (
        "import socket\ndef f(port):\n    socket.create_connection(('127.0.0.1', port), timeout=1)\n"
        "    return 1\n", "assert f(PORT) == 1", None),
    "connects to an outside address": (
        "import socket\ndef f():\n    socket.create_connection(('8.8.8.8', 53), timeout=1)\n    return 1\n",
        "assert f() == 1", None),
    "looks up a name": ("import socket\ndef f():\n    return socket.gethostbyname('pypi.org')\n",
                        "assert isinstance(f(), str)", None),
    "reads the user's home": ("import os\ndef f():\n    return os.listdir('/root') + os.listdir('/home')\n",
                              "assert f() is not None", None),
    "reads the project": ("def f(p):\n    return open(p).read()\n", "assert f(REPO_FILE)", None),
    "reads password hashes": ("def f():\n    return open('/etc/shadow').read()\n", "assert f()", None),
    "reads the environment": ("import os\ndef f():\n    return os.environ.get('SELFCORRECT_TEST_SECRET')\n",
                              f"assert f() == {SECRET!r}", None),
    "reads init's environment": ("def f():\n    return open('/proc/1/environ', 'rb').read()\n",
                                 f"assert {SECRET!r}.encode() in f()", None),
    "writes outside its directory": ("def f():\n    open('/usr/pwned', 'w').write('x')\n"
                                     f"    open({str(HOST_MARKER)!r}, 'w').write('x')\n    return 1\n",
                                     "assert f() == 1", None),
    "deletes the interpreter": ("import os\ndef f():\n    os.remove('/usr/bin/python3')\n    return 1\n",
                                "assert f() == 1", None),
    "leaves a daemon": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                        "        time.sleep(30)\n    os._exit(0)\ndef f():\n    return 1\n",
                        "assert f() == 2", None),
    "kills its parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n", "assert True", None),
    "signals everyone it can": ("import os, signal\nos.kill(-1, signal.SIGKILL)\n", "assert True", None),
    "stops its parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\n", "assert True", None),
    "crashes through ctypes": ("import ctypes\nctypes.string_at(0)\n", "assert True", None),
    "exits with success": ("import os\nos._exit(0)\n", "assert True", None),
    "sys.exit with success": ("import sys\nsys.exit(0)\n", "assert True", None),
    "forges __eq__": ("class Yes:\n    def __eq__(self, other):\n        return True\n"
                      "def f():\n    return Yes()\n", "assert f() == 42", None),
    "forges an int": ("class Liar(int):\n    def __eq__(self, other):\n        return True\n"
                      "def f():\n    return Liar(0)\n", "assert f() == 42", None),
    "patches assert machinery": (
        "import builtins, sys\nbuiltins.AssertionError = type('Nothing', (Exception,), {})\n"
        "sys.excepthook = lambda *a: None\ndef f():\n    return 0\n", "assert f() == 42", None),
    "prints fake passes": ("print('PASS')\nprint('{\"passed\": true, \"tests\": []}')\n"
                           "def f():\n    return 0\n", "assert f() == 42", None),
    "writes forged results to every descriptor": (
        "import os, json, struct\nfake = json.dumps({'loaded': True, 'tests': []}).encode()\n"
        "for fd in range(0, 256):\n    try:\n        os.write(fd, struct.pack('>I', len(fake)) + fake)\n"
        "    except OSError:\n        pass\ndef f():\n    return 0\n", "assert f() == 42", None),
    "reads its parent's memory": ("import os\ndef f():\n    return open(f'/proc/{os.getppid()}/mem', 'rb').read(1)\n",
                                  "assert f()", None),
    "lowers its parent's limits": (
        "import os, resource\nresource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (8, 8))\n", "assert False", None),
    "locks its directory against clean-up": (
        "import os\nos.makedirs('/tmp/job/locked/deeper')\nopen('/tmp/job/locked/deeper/f', 'w').write('x')\n"
        "os.chmod('/tmp/job/locked/deeper', 0o500)\nos.chmod('/tmp/job/locked', 0o500)\n", "assert False", None),
}


def test_there_are_enough_hostile_programs():
    assert len(HOSTILE) >= 25


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_is_contained(name, sandbox, listener):
    program, test, limit = HOSTILE[name]
    test = test.replace("PORT", str(listener.port)).replace(
        "REPO_FILE", repr(str(Path(__file__).resolve())))
    result = sandbox.run(program, [test])
    assert not result.passed, f"{name} passed: {result}"
    if limit is not None:
        assert result.limit == limit, result

    # ...and the harness and the machine are as they were
    assert listener.connections == 0
    assert not HOST_MARKER.exists()
    assert os.path.exists("/usr/bin/python3")
    ok = sandbox.run("def f():\n    return 1\n", ["assert f() == 1"])
    assert ok.passed, f"the sandbox did not recover after {name}: {ok}"
    leftovers = sandbox.run("import os\ndef f():\n    return sorted(os.listdir('/tmp')), sorted(os.listdir('/dev/shm'))\n",
                            ["assert f() == (['job'], [])"])
    assert leftovers.passed, f"{name} left files behind: {leftovers.tests[0].message}"
    # bwrap outside and as init, and the zygote, for each live worker
    live = sum(w is not None for w in sandbox._workers)
    assert len(worker_processes(sandbox)) == 3 * live, f"{name} left processes behind"
