"""The code that runs inside the sandbox (standard library only; passed with `python -c`).

Three processes, so that the verdict never depends on the untrusted program:

  zygote (Z)  long-lived, one per worker. Reads jobs from the harness, forks a runner for
              each, then kills every other process in the sandbox and wipes the scratch
              space, so that no job can leave anything behind for the next.
  runner (P)  trusted, one per job. Runs the test code itself. Every name the program
              defines is a proxy in the runner: calling it asks the child to call the real
              thing and send back the result as plain data (exact types only: None, bool,
              int, float, complex, str, bytes, list, tuple, dict, set, frozenset). Anything
              else comes back as an opaque handle that equals nothing but itself, so an
              object with a forged __eq__ cannot pass a test. Asserts, exceptions and
              timing are all evaluated in the runner.
  child (C)   untrusted, forked by the runner. Loads the program under rlimits, in its own
              process group, with no descriptor that reaches the harness, and serves calls.

Z and P are made non-dumpable, so that the child, although it runs as the same user, can
neither ptrace them nor open their descriptors through /proc. What the child can do to
them (kill them, lower their limits) makes its own job fail and gets the worker replaced:
the zygote checks its own limits and priority before every job and exits if they changed.
"""

import ast
import base64
import builtins
import collections
import gc
import importlib
import json
import math
import os
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import time
import types

MAX_FRAME = 16 * 1024 * 1024
MAX_DEPTH = 64
KEEP_TEXT = 2000

# -- framing: 4-byte length, then JSON ----------------------------------------------------


class Gone(Exception):
    """The other end closed, died or sent something that is not a frame."""


class Late(Exception):
    """The other end did not answer before the deadline."""


def send_frame(fd, message):
    data = json.dumps(message, allow_nan=True).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def recv_exact(fd, n, deadline=None):
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise Late()
        chunk = os.read(fd, n - got)
        if not chunk:
            raise Gone("closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_frame(fd, deadline=None):
    (size,) = struct.unpack(">I", recv_exact(fd, 4, deadline))
    if size > MAX_FRAME:
        raise Gone("frame of %d bytes" % size)
    try:
        return json.loads(recv_exact(fd, size, deadline))
    except (ValueError, RecursionError) as e:
        raise Gone("malformed frame: %s" % e)


# -- plain data across the boundary --------------------------------------------------------


class Unsendable(Exception):
    pass


# Standard-library types whose value is their data: they cross as data and the runner
# rebuilds them with its own classes, so a program that patches them gains nothing.
MAPPINGS = {collections.Counter: "C", collections.OrderedDict: "O", collections.defaultdict: "D"}
SEQUENCES = {list: "l", tuple: "t", set: "s", frozenset: "f", collections.deque: "q"}
BY_TAG = {tag: kind for kind, tag in list(MAPPINGS.items()) + list(SEQUENCES.items())}
BY_TAG["C"] = lambda pairs: collections.Counter(dict(pairs))
BY_TAG["D"] = lambda pairs: collections.defaultdict(None, pairs)


def encode(value, to_handle, depth=0):
    """Plain data by exact type, tagged so that containers keep their kind; other objects
    become what `to_handle` makes of them."""
    if depth > MAX_DEPTH:
        raise Unsendable("a value nested more than %d deep" % MAX_DEPTH)
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return value if abs(value) < 2**53 else {"i": str(value)}
    if kind is float:
        return value if math.isfinite(value) else {"x": repr(value)}
    if kind in SEQUENCES:
        return {SEQUENCES[kind]: [encode(v, to_handle, depth + 1) for v in value]}
    if kind is dict or kind in MAPPINGS:
        pairs = [[encode(k, to_handle, depth + 1), encode(v, to_handle, depth + 1)]
                 for k, v in value.items()]
        return {MAPPINGS.get(kind, "d"): pairs}
    if kind is bytes or kind is bytearray:
        return {"b" if kind is bytes else "ba": base64.b64encode(value).decode()}
    if kind is complex:
        return {"c": [encode(value.real, to_handle), encode(value.imag, to_handle)]}
    if kind is _loaded("decimal", "Decimal") or kind is _loaded("fractions", "Fraction"):
        return {"dec" if kind.__name__ == "Decimal" else "fr": str(value)}
    if kind is range:
        return {"r": [value.start, value.stop, value.step]}
    if issubclass(kind, tuple) and hasattr(kind, "_fields") and kind.__eq__ is tuple.__eq__:
        return {"nt": [kind.__name__, list(kind._fields),
                       [encode(v, to_handle, depth + 1) for v in value]]}
    return to_handle(value)


def _loaded(module, name):
    """A standard-library class, if the program has imported its module (else no value of
    it can exist, and the zygote need not import it)."""
    return getattr(sys.modules.get(module), name, None)


def decode(data, from_handle, depth=0):
    if depth > MAX_DEPTH:
        raise Unsendable("a value nested more than %d deep" % MAX_DEPTH)
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is not dict or len(data) != 1:
        raise Unsendable("not a tagged value")
    (tag, body), = data.items()
    if tag in SEQUENCES.values():
        return BY_TAG[tag]([decode(v, from_handle, depth + 1) for v in body])
    if tag == "d" or tag in MAPPINGS.values():
        pairs = [(decode(k, from_handle, depth + 1), decode(v, from_handle, depth + 1)) for k, v in body]
        return dict(pairs) if tag == "d" else BY_TAG[tag](pairs)
    if tag == "i":
        return int(body)
    if tag == "x":
        return float(body)
    if tag in ("b", "ba"):
        raw = base64.b64decode(body)
        return raw if tag == "b" else bytearray(raw)
    if tag == "c":
        return complex(decode(body[0], from_handle), decode(body[1], from_handle))
    if tag == "dec":
        return importlib.import_module("decimal").Decimal(body)
    if tag == "fr":
        return importlib.import_module("fractions").Fraction(body)
    if tag == "r":
        return range(*body)
    if tag == "nt":
        name, fields, values = body
        return collections.namedtuple(name, fields)(*[decode(v, from_handle, depth + 1) for v in values])
    return from_handle(tag, body)


def describe_error(error):
    try:
        message = str(error)[:KEEP_TEXT]
    except BaseException:
        message = "(the exception's message could not be read)"
    try:
        import traceback  # on failures only: the zygote stays small, and forks cheap

        tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    except BaseException:
        tb = ""
    return {"type": type(error).__name__, "message": message, "errno": getattr(error, "errno", None),
            "traceback": tb[-KEEP_TEXT:]}


def non_dumpable():
    """No ptrace and no /proc/PID/{mem,fd,environ} for other processes of the same user.
    Children inherit it. ctypes is dropped again afterwards, to keep the zygote small."""
    import ctypes

    try:
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        pass  # not Linux: the zygote runs, with weaker separation
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith("ctypes.")]:
        del sys.modules[name]


# -- the child: loads and serves the untrusted program ------------------------------------

OPERATIONS = {
    "call": lambda target, args, kwargs: target(*args, **kwargs),
    "iter": lambda target, args, kwargs: list(target),
    "len": lambda target, args, kwargs: len(target),
    "getitem": lambda target, args, kwargs: target[args[0]],
    "contains": lambda target, args, kwargs: args[0] in target,
    "getattr": lambda target, args, kwargs: getattr(target, args[0]),
    "repr": lambda target, args, kwargs: repr(target),
    "str": lambda target, args, kwargs: str(target),
    "bool": lambda target, args, kwargs: bool(target),
}


def child_main(sock_fd, job, workdir):
    limits = job["limits"]
    os.setpgid(0, 0)
    gc.enable()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        out = os.open(os.path.join(workdir, "." + name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, fd)
        os.close(out)
    os.closerange(3, sock_fd)
    os.closerange(sock_fd + 1, 65536)
    os.chdir(workdir)
    # The hard CPU limit lies a second past the soft one: the kernel sends SIGKILL at the hard
    # limit, and with the two equal it would, so the report could not name the CPU limit.
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 1))
    for limit, value in ((resource.RLIMIT_AS, limits["memory_bytes"]),
                         (resource.RLIMIT_FSIZE, limits["file_bytes"]),
                         (resource.RLIMIT_CORE, 0),
                         (resource.RLIMIT_NPROC, job["nproc"])):
        resource.setrlimit(limit, (value, value))

    handles = {}

    def to_handle(obj):
        handles[id(obj)] = obj
        return {"h": [id(obj), type(obj).__name__]}

    def from_handle(tag, body):
        if tag == "h":
            return handles[body[0] if type(body) is list else body]
        if tag == "n":
            return namespace[body]
        raise Unsendable("unknown tag %r" % tag)

    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(job["program"], "<program>", "exec"), namespace)
        names = {}
        for name, value in list(namespace.items()):
            if name.startswith("__"):
                continue
            if isinstance(value, types.ModuleType):
                names[name] = {"module": value.__name__}
            elif callable(value):
                names[name] = {"remote": True}
            else:
                encoded = encode(value, to_handle)
                is_object = type(encoded) is dict and "h" in encoded
                names[name] = {"remote": True} if is_object else {"value": encoded}
        loaded = {"loaded": True, "names": names}
    except BaseException as error:
        loaded = {"loaded": False, "error": describe_error(error)}
    flush_output()  # what loading printed must survive a program that is never called
    send_frame(sock_fd, loaded)
    if not loaded["loaded"]:
        return
    while True:
        try:
            request = recv_frame(sock_fd)
        except Gone:
            return
        try:
            (tag, body), = request["target"].items()
            target = from_handle(tag, body)
            args = [decode(a, from_handle) for a in request["args"]]
            kwargs = {k: decode(v, from_handle) for k, v in request["kwargs"].items()}
            reply = {"value": encode(OPERATIONS[request["op"]](target, args, kwargs), to_handle)}
        except BaseException as error:
            reply = {"raise": describe_error(error)}
        flush_output()
        try:
            send_frame(sock_fd, reply)  # serialises before it writes: a failure sends nothing
        except (TypeError, ValueError, OverflowError, RecursionError) as error:
            send_frame(sock_fd, {"raise": describe_error(error)})


def flush_output():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass  # the program closed or replaced its streams: nothing more to keep


# -- the runner: trusted test code, the program behind proxies ----------------------------


class RemoteError(Exception):
    """An exception raised in the program whose type is not a built-in one."""


class ProgramGone(Exception):
    pass


def checked_reply(reply):
    """A reply from the program, which controls its end of the socket: anything but the
    expected shape is the program's failure, not the runner's."""
    if type(reply) is dict and len(reply) == 1:
        if "value" in reply:
            return reply
        error = reply.get("raise")
        if type(error) is dict and type(error.get("type")) is str and type(error.get("message", "")) is str:
            return reply
    raise ProgramGone("the program broke the runner's protocol (it wrote to its own channel)")


def checked_loaded(loaded):
    if type(loaded) is dict and loaded.get("loaded") is False and type(loaded.get("error")) is dict:
        return loaded
    names = loaded.get("names") if type(loaded) is dict and loaded.get("loaded") is True else None
    if type(names) is dict and all(type(k) is str and type(v) is dict and len(v) == 1
                                   and next(iter(v)) in ("module", "remote", "value")
                                   for k, v in names.items()):
        return loaded
    raise ProgramGone("the program broke the runner's protocol while loading")


RUN = {"child": None, "deadline": 0.0}  # the runner serves one job: its child and deadline


class Remote:
    """Something that lives in the program: a name it defines, or an object it returned.
    It can be called, iterated, indexed and asked for attributes (each a call into the
    program); it equals only itself, whatever the program's own __eq__ says."""

    def __init__(self, ref, label):
        self._ref, self._label = ref, label

    def _ask(self, op, *args, **kwargs):
        message = {"op": op, "target": self._ref,
                   "args": [encode(a, to_wire) for a in args],
                   "kwargs": {k: encode(v, to_wire) for k, v in kwargs.items()}}
        reply = checked_reply(RUN["child"].call(message, RUN["deadline"]))
        if "value" in reply:
            try:
                return decode(reply["value"], from_wire)
            except (Unsendable, KeyError, TypeError, ValueError, RecursionError) as e:
                raise ProgramGone("the program sent a value that is not data: %s" % e) from None
        raise remote_exception(reply["raise"])

    def __call__(self, *args, **kwargs):
        return self._ask("call", *args, **kwargs)

    def __iter__(self):
        return iter(self._ask("iter"))

    def __len__(self):
        return self._ask("len")

    def __getitem__(self, key):
        return self._ask("getitem", key)

    def __contains__(self, item):
        return self._ask("contains", item)

    def __bool__(self):
        return self._ask("bool")

    def __str__(self):
        return self._ask("str")

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name)

    def __repr__(self):
        try:
            return self._ask("repr")
        except BaseException:
            return "<%s from the program>" % self._label


def to_wire(obj):
    if isinstance(obj, Remote):
        return obj._ref
    raise Unsendable("cannot pass a %s to the program" % type(obj).__name__)


def from_wire(tag, body):
    if tag == "h":
        return Remote({"h": body[0]}, "%s object" % body[1])
    if tag == "n":
        return Remote({"n": body}, body)
    raise Unsendable("unknown tag %r" % tag)


def remote_exception(error):
    """The program's exception, as the built-in type it was when it was one."""
    kind = getattr(builtins, str(error.get("type")), None)
    message = error.get("message", "")
    raised = None
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            raised = kind(message)
        except BaseException:
            raised = None
    if raised is None:
        raised = RemoteError("%s: %s" % (error.get("type"), message))
    raised.remote = error
    return raised


def test_namespace(names):
    """The tests' view of the program: modules it imported (imported here too), its
    plain-data values, and everything else as Remote."""
    namespace = {"__name__": "__tests__", "__builtins__": builtins, "__check_equal__": check_equal,
                 "__observe__": observe}
    for name, spec in names.items():
        if "module" in spec:
            try:
                namespace[name] = importlib.import_module(spec["module"])
                continue
            except ImportError:
                pass  # a module only the program can see: reach it through the program
        if "value" in spec:
            namespace[name] = decode(spec["value"], from_wire)
        else:
            namespace[name] = Remote({"n": name}, name)
    return namespace


OBSERVED = []  # what the current test passed to __observe__


def observe(value):
    """Tests may record values they see (a vote on behaviour compares them across programs)."""
    OBSERVED.append(short(value))
    return value


def check_equal(left, right, source):
    """`assert A == B` in a test becomes this: the same verdict, with what came out."""
    if not left == right:
        raise AssertionError("%s returned %s, expected %s" % (source, short(left), short(right)))


def short(value):
    try:
        text = repr(value)
    except BaseException:
        text = "<unprintable %s>" % type(value).__name__
    return text if len(text) <= 300 else text[:300] + "..."


class Child:
    """One running copy of the program."""

    def __init__(self, job, workdir):
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            ours.close()
            try:
                child_main(theirs.fileno(), job, workdir)
            finally:
                os._exit(0)
        theirs.close()
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # the child did it already, or is already gone
        self.pid, self.sock, self.status = pid, ours, None
        self.ended_itself = None  # how the program ended, when it ended on its own

    def call(self, message, deadline):
        try:
            send_frame(self.sock.fileno(), message)
        except OSError as e:
            raise ProgramGone(self.ended()) from e
        return self.first_frame(deadline)

    def first_frame(self, deadline):
        try:
            return recv_frame(self.sock.fileno(), deadline)
        except Late:
            self.kill()
            raise
        except (Gone, OSError) as e:
            raise ProgramGone(self.ended()) from e

    def ended(self):
        """The program closed its end: wait for it (briefly) and say how it ended."""
        for _ in range(100):
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                break
            time.sleep(0.0005)
        self.kill()
        self.ended_itself = self.exit_text()
        return self.ended_itself

    def kill(self):
        if self.status is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass  # the group is gone already
            _, self.status = os.waitpid(self.pid, 0)
        self.sock.close()

    def exit_text(self):
        if os.WIFSIGNALED(self.status):
            return "the program was killed by %s" % signal_name(os.WTERMSIG(self.status))
        return "the program exited with code %d" % os.WEXITSTATUS(self.status)

    def signal_name(self):
        if self.status is not None and os.WIFSIGNALED(self.status):
            return signal_name(os.WTERMSIG(self.status))
        return None


def signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def rewrite_asserts(code):
    """`assert X == Y` anywhere in a test reports the value of X when it fails."""

    class Rewrite(ast.NodeTransformer):
        def visit_Assert(self, node):
            test = node.test
            if (node.msg is None and isinstance(test, ast.Compare) and len(test.ops) == 1
                    and isinstance(test.ops[0], ast.Eq)):
                source = ast.get_source_segment(code, test.left) or "it"
                call = ast.Call(func=ast.Name("__check_equal__", ast.Load()),
                                args=[test.left, test.comparators[0], ast.Constant(source)],
                                keywords=[])
                return ast.copy_location(ast.Expr(call), node)
            return node

    tree = Rewrite().visit(ast.parse(code))
    return compile(ast.fix_missing_locations(tree), "<test>", "exec")


COMPILED = {}  # test and setup code -> code object or the SyntaxError it raised, in the zygote


def compiled(code, rewrite):
    key = (code, rewrite)
    if key not in COMPILED:
        if len(COMPILED) > 4096:
            COMPILED.clear()
        try:
            COMPILED[key] = rewrite_asserts(code) if rewrite else compile(code, "<setup>", "exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
            COMPILED[key] = error
    return COMPILED[key]


def confine(job):
    """Limits for a runner that executes untrusted test code."""
    limits = job["limits"]
    for limit, value in ((resource.RLIMIT_AS, limits["memory_bytes"]),
                         (resource.RLIMIT_CPU, int(limits["wall_seconds"]) + 2),
                         (resource.RLIMIT_FSIZE, limits["file_bytes"]),
                         (resource.RLIMIT_NPROC, job["nproc"])):
        resource.setrlimit(limit, (value, value))


def runner_main(job, workdir):
    """Run the job's tests against a fresh copy of the program; return the report."""
    limits = job["limits"]
    started = time.monotonic()
    RUN["deadline"] = started + limits["wall_seconds"]
    tests = job["tests"]
    results, limit_hit, restarts = [], None, 0

    def report(loaded, load_error, timed_out):
        child = RUN["child"]
        if child is not None:
            child.kill()
        return {"loaded": loaded, "load_error": load_error, "tests": results,
                "timed_out": timed_out, "limit": limit_hit,
                "exit": child.ended_itself if child is not None else None,
                "seconds": time.monotonic() - started}

    def fail_all(error, timed_out=False):
        results[:] = [{"name": t["name"], "passed": False, "error": error, "seconds": 0.0,
                       "timed_out": timed_out} for t in tests]

    def start():
        RUN["child"] = Child(job, workdir)
        return checked_loaded(RUN["child"].first_frame(RUN["deadline"]))

    try:
        loaded = start()
    except Late:
        error = {"type": "Timeout", "message": "the program did not finish loading in time"}
        limit_hit = "wall"
        fail_all(error, timed_out=True)
        return report(False, error, True)
    except ProgramGone as gone:
        loaded = {"loaded": False, "error": {"type": "ProgramExited", "message": "%s while loading" % gone}}
    if not loaded.get("loaded"):
        limit_hit = limit_from(loaded["error"], RUN["child"].signal_name())
        fail_all(loaded["error"])
        return report(False, loaded["error"], False)

    try:
        namespace = test_namespace(loaded["names"])
    except (Unsendable, KeyError, TypeError, ValueError, RecursionError) as e:
        error = {"type": "ProgramExited", "message": "the program sent names that are not data: %s" % e}
        fail_all(error)
        return report(False, error, False)
    setup = job["setup_code"]
    try:
        if isinstance(setup, BaseException):
            raise setup
        exec(setup, namespace)
    except BaseException as error:
        failure = {"type": "SetupError", "message": "the test setup failed: %s" % describe_error(error)["message"]}
        fail_all(failure)
        return report(True, failure, False)

    timed_out = False
    for test, code in zip(tests, job["test_code"]):
        if timed_out:
            results.append({"name": test["name"], "passed": False, "seconds": 0.0, "timed_out": True,
                            "error": {"type": "NotRun", "message": "not run: an earlier test timed out"}})
            continue
        if RUN["child"].status is not None and restarts < len(tests):
            restarts += 1  # a fresh copy of the program for the tests after a crash
            try:
                start()
            except (Late, ProgramGone):
                pass  # the test below then fails with the reason
        began = time.monotonic()
        del OBSERVED[:]
        outcome = {"name": test["name"], "passed": False, "timed_out": False, "error": None}
        try:
            if isinstance(code, BaseException):
                raise code
            exec(code, namespace)
            outcome["passed"] = True
        except Late:
            outcome["timed_out"] = timed_out = True
            outcome["error"] = {"type": "Timeout", "message": "the test did not finish in time"}
            limit_hit = "wall"
        except ProgramGone as gone:
            outcome["error"] = {"type": "ProgramExited", "message": str(gone)}
            limit_hit = limit_hit or limit_from(None, RUN["child"].signal_name())
        except BaseException as error:
            info = getattr(error, "remote", None) or describe_error(error)
            if isinstance(error, AssertionError) and not info["message"]:
                info["message"] = "assertion failed: %s" % test["code"].strip()[:KEEP_TEXT]
            outcome["error"] = info
            limit_hit = limit_hit or limit_from(info, None)
        outcome["seconds"] = time.monotonic() - began
        outcome["observed"] = list(OBSERVED)
        results.append(outcome)
    return report(True, None, timed_out)


def limit_from(error, killed_by):
    """Which resource limit, if any, explains a failure."""
    if killed_by == "SIGXCPU":
        return "cpu"
    if killed_by == "SIGXFSZ":
        return "file size"
    if error:
        errno = error.get("errno")
        if error.get("type") == "MemoryError":
            return "memory"
        if errno == 27:  # EFBIG: Python ignores SIGXFSZ, so an oversized write raises
            return "file size"
        if errno == 11 and error.get("type") in ("BlockingIOError", "OSError"):
            return "processes"
        if error.get("type") == "RuntimeError" and "can't start new thread" in error.get("message", ""):
            return "processes"  # threads count against the same limit
    return None


# -- the zygote ----------------------------------------------------------------------------


def sweep(isolated, own_group):
    """Kill every process of the job. In a PID namespace that is every process but this one
    and the namespace's init; elsewhere, the job's process groups."""
    me = os.getpid()
    for _ in range(1000):
        if isolated:
            others = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
            others = [p for p in others if not zombie(p)]
        else:
            others = []
            for group in own_group:
                try:
                    os.killpg(group, signal.SIGKILL)
                except OSError:
                    pass
        for pid in others:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        reap()
        if not others:
            return
        time.sleep(0.001)


def zombie(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wipe(path):
    """Empty a directory the program may have made hard to empty (read-only directories)."""
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            try:
                os.chmod(os.path.join(root, name), 0o700)
            except OSError:
                continue  # rmtree below reports what stays
    for entry in os.listdir(path):
        full = os.path.join(path, entry)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            try:
                os.unlink(full)
            except OSError:
                continue  # the emptiness check below catches it
    return not os.listdir(path)


def own_state():
    return ([resource.getrlimit(r) for r in (resource.RLIMIT_CPU, resource.RLIMIT_AS,
             resource.RLIMIT_NPROC, resource.RLIMIT_NOFILE, resource.RLIMIT_FSIZE)],
            os.getpriority(os.PRIO_PROCESS, 0))


def run_job(job, scratch, isolated):
    """Trusted test code (from a dataset or the user) runs in the zygote itself, which forks
    only the program; test code a model wrote runs in a runner of its own, under limits."""
    workdir = os.path.join(scratch, "job")
    os.mkdir(workdir, 0o700)
    job["setup_code"] = compiled(job.get("setup") or "", False)
    job["test_code"] = [compiled(t["code"], True) for t in job["tests"]]
    # Forks then leave the zygote's objects (and their pages) alone. Collect first, or a
    # cycle the last job left would be frozen forever (a full collection here scans only
    # what was made since the last freeze).
    gc.collect()
    gc.freeze()
    if job["tests_trusted"]:
        result = run_here(job, workdir)
    else:
        result = run_in_runner(job, workdir)
    left = live_processes() if isolated else 0
    if left >= job["processes"] and not result.get("limit"):
        result["limit"] = "processes"  # the program filled its process quota
    if left or not isolated:
        sweep(isolated, [RUN["child"].pid] if RUN["child"] else [])  # its process group
        left = live_processes() if isolated else 0
    RUN["child"] = None
    clean = wipe(scratch)
    if isolated and os.path.isdir("/dev/shm"):
        clean = wipe("/dev/shm") and clean
    result["clean"] = clean and left == 0
    return result


def run_here(job, workdir):
    """Run trusted tests in this process, restoring the global state a test may change."""
    saved = (random_state(), sys.getrecursionlimit(), os.getcwd(), list(sys.path))
    try:
        result = runner_main(job, workdir)
    except BaseException as error:
        result = {"harness_error": describe_error(error)}
    finally:
        state, recursion, cwd, path = saved
        if state is not None:
            sys.modules["random"].setstate(state)
        sys.setrecursionlimit(recursion)
        os.chdir(cwd)
        sys.path[:] = path
    add_output(result, workdir, job)
    return result


def random_state():
    module = sys.modules.get("random")
    return module.getstate() if module else None


def run_in_runner(job, workdir):
    read_end, write_end = os.pipe()
    runner = os.fork()
    if runner == 0:
        try:
            os.close(read_end)
            os.dup2(os.open(os.devnull, os.O_RDWR), 0)
            os.dup2(0, 1)  # non-dumpable already: the flag is inherited from the zygote
            gc.disable()  # a short life: no collections, fewer pages copied from the zygote
            confine(job)
            result = runner_main(job, workdir)
            add_output(result, workdir, job)
            send_frame(write_end, result)
        except BaseException as error:
            send_frame(write_end, {"harness_error": describe_error(error)})
        finally:
            os._exit(0)
    os.close(write_end)
    grace = job["limits"]["wall_seconds"] + 5
    try:
        result = recv_frame(read_end, time.monotonic() + grace)
    except (Gone, Late) as e:
        result = {"harness_error": {"type": "RunnerLost", "message":
                                    "the test runner did not report (%s): the program killed or "
                                    "stopped it" % (type(e).__name__)}}
    os.close(read_end)
    try:
        os.kill(runner, signal.SIGKILL)
    except OSError:
        pass  # it has exited already
    os.waitpid(runner, 0)
    return result


def add_output(result, workdir, job):
    if "harness_error" not in result:
        result["stdout"], result["stderr"] = (read_text(os.path.join(workdir, "." + n), job)
                                              for n in ("stdout", "stderr"))


def live_processes():
    """Processes in the namespace other than its init and this zygote (zombies aside)."""
    me = os.getpid()
    return sum(1 for p in os.listdir("/proc")
               if p.isdigit() and int(p) not in (1, me) and not zombie(int(p)))


def read_text(path, job):
    try:
        with open(path, "rb") as f:
            data = f.read(job["limits"]["output_bytes"] + 1)
    except OSError:
        return ""
    text = data[: job["limits"]["output_bytes"]].decode("utf-8", "replace")
    return text + ("\n[output truncated]" if len(data) > job["limits"]["output_bytes"] else "")


def zygote_main():
    non_dumpable()
    hello = recv_frame(0)
    scratch, isolated = hello["scratch"], hello["isolated"]
    resource.setrlimit(resource.RLIMIT_NPROC, (hello["nproc"], hello["nproc"]))
    baseline = own_state()
    send_frame(1, {"ready": True, "pid": os.getpid(), "python": sys.version.split()[0]})
    while True:
        try:
            job = recv_frame(0)
        except Gone:
            return
        if own_state() != baseline:
            return  # a job changed our limits or priority: let the harness start a fresh worker
        try:
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
        except OSError:
            pass  # a cpuset narrower than all CPUs: keep what we have
        result = run_job(job, scratch, isolated)
        result["nonce"] = job["nonce"]
        result["clean"] = result["clean"] and own_state() == baseline
        send_frame(1, result)
        if not result["clean"]:
            return  # something of the job outlived it: the harness starts a fresh worker


if __name__ == "__main__":
    zygote_main()
