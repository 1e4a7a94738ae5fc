"""``cds serve``: starts on its embedded defaults, says where it listens and
prints a curl that works; refuses unsafe settings before listening."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

import requests

from tests.conftest import ROOT
from tests.servers import free_port, stop


def _serve(*args: str, **env: str) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CDS_") or k == "CDS_RULESET"}
    environment.update(env)
    return subprocess.Popen([sys.executable, "-m", "cds.cli", "serve", *args], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_serve_prints_where_it_listens_and_a_curl_that_works() -> None:
    port = free_port()
    server = _serve("--port", str(port), CDS_AUTH="off")
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while not any(line.startswith("curl ") for line in lines):
            assert time.monotonic() < deadline and server.poll() is None, server.stderr.read() if server.stderr else ""
            line = server.stdout.readline() if server.stdout else ""
            if line:
                lines.append(line.rstrip("\n"))
        assert f"listening on http://127.0.0.1:{port}" in "\n".join(lines)
        assert "AUTHENTICATION IS OFF" in lines[0]
        words = shlex.split(next(line for line in lines if line.startswith("curl ")))
        url = next(w for w in words if w.startswith("http://"))
        body = words[words.index("-d") + 1]
        response = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["cards"][0]["indicator"] == "critical"
    finally:
        stop(server)


def test_serve_refuses_auth_off_on_a_public_address() -> None:
    server = _serve("--host", "0.0.0.0", "--port", str(free_port()), CDS_AUTH="off")
    _out, err = server.communicate(timeout=60)
    assert server.returncode == 2
    assert "loopback" in err


def test_serve_with_auth_on_needs_trusted_clients() -> None:
    server = _serve("--port", str(free_port()))
    _out, err = server.communicate(timeout=60)
    assert server.returncode == 2
    assert "CDS_TRUSTED_CLIENTS" in err
