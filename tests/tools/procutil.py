"""Process and port helpers shared by the integration tests, the demo and the benchmark.

Every process is started by us, tracked by PID, and stopped by PID (never by name). Children get
PR_SET_PDEATHSIG through util-linux `setpriv --pdeathsig KILL`, so a crashed or killed test runner
does not leave servers behind. Everything has a timeout.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

_handed_out = set()


def free_port(host="127.0.0.1"):
    """Returns a loopback TCP port that was free a moment ago and not handed out before in this process."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port")


def clean_env(extra=None):
    """The environment for child processes: no proxy variables (traffic must stay on loopback)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.setdefault("LC_ALL", "C.UTF-8")
    if extra:
        env.update(extra)
    return env


_SETPRIV = shutil.which("setpriv")


class Proc:
    """A child process started by us, with its output in a log file."""

    def __init__(self, argv, log_path, env=None, cwd=None):
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "ab")
        full = ([_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []) + self.argv
        self.popen = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                      env=clean_env(env), cwd=cwd)
        self.pid = self.popen.pid
        self.returncode = None

    def alive(self):
        return self.popen.poll() is None

    def descendants(self):
        """PIDs of this process's children and their children (read from /proc)."""
        out, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        kids = [int(x) for x in f.read().split()]
                    out.extend(kids)
                    todo.extend(kids)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
        return out

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout):
        """Waits for exit; returns the exit code, or None on timeout."""
        try:
            self.returncode = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Sends `sig` and waits up to `timeout`; if still running, SIGKILLs its descendants (nghttpx
        workers; read while they are still its children, so no PID can have been reused) and then it."""
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            if self.wait(timeout) is None:
                for pid in self.descendants():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.wait(5)
        else:
            self.wait(0)
        self._log.close()
        return self.returncode

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def rss_kb(self, include_children=True):
        """Resident set size (VmRSS, kB) of the process, plus its descendants (nghttpx forks workers)."""
        pids = [self.pid] + (self.descendants() if include_children else [])
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except FileNotFoundError:
                pass
        return total


def wait_port(host, port, timeout=10.0, proc=None):
    """Waits until a TCP connect to host:port succeeds. Raises if `proc` exits or on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.argv[0]} exited with {proc.popen.returncode} before listening:\n{proc.log_text()[-3000:]}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def wait_ready_file(path, proc, timeout=15.0):
    """Waits for a tool started with --ready-file to write its port there; returns the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read().strip()
            if text:
                return int(text)
        except FileNotFoundError:
            pass
        if not proc.alive():
            raise RuntimeError(f"{proc.argv} exited with {proc.popen.returncode}:\n{proc.log_text()[-3000:]}")
        time.sleep(0.03)
    raise TimeoutError(f"{proc.argv} not ready after {timeout}s:\n{proc.log_text()[-3000:]}")


def write_ready_file(path, port):
    """Used by the tools: atomically publishes the bound port."""
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"


def start_tool(script, args, workdir, name=None, env=None, timeout=15.0):
    """Starts tests/tools/<script> with --port 0 --ready-file; returns (Proc, port)."""
    name = name or os.path.splitext(script)[0]
    ready = os.path.join(workdir, f"{name}.{time.monotonic_ns()}.port")
    log = os.path.join(workdir, f"{name}.log")
    proc = Proc([PYTHON, os.path.join(TOOLS_DIR, script), "--ready-file", ready] + list(args), log, env=env)
    try:
        port = wait_ready_file(ready, proc, timeout)
    except Exception:
        proc.stop(signal.SIGKILL)
        raise
    return proc, port
