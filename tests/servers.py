"""Running a real server process in a test: a free loopback port, waiting
until it is ready, finding its workers, and stopping it for sure."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> set[int]:
    """The process's direct children (gunicorn workers of a master), from /proc."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry))
    return out


def wait_ready(server: subprocess.Popen, url: str, log_path: Path | None = None, timeout: float = 30) -> None:
    """Poll ``url`` until it answers 200; fail with the log if the server died."""
    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, log_path.read_text()[-3000:] if log_path else "the server exited"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.2)


def stop(server: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 30 s: the test never leaves a server behind."""
    server.send_signal(signal.SIGTERM)
    try:
        server.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.communicate()
