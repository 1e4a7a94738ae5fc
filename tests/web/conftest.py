"""Fixtures for the web pages: an app with a SQLite audit trail and a users
file, served on 127.0.0.1 in a thread, and a real headless Chromium.

The browser is Debian's ``chromium`` driven through ``chromium-driver``
(installed by .ci/run); nothing is downloaded. If either is missing the
browser tests fail, they do not skip. Screenshots go to
``test-output/screenshots/`` (docs/web.md uses a copy of them).
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from werkzeug.security import generate_password_hash
from werkzeug.serving import make_server

from cds.api import create_app

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "fhir_samples"
SCREENSHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)   # the samples are dated relative to this day
SECRET = "web-test-secret-" + "0123456789abcdef" * 2

PASSWORDS = {"alice": "alice's long pass phrase", "bob": "bob audits the trail 42", "carol": "carol does both 1234"}
ROLES = {"alice": "clinician", "bob": "auditor", "carol": "clinician,auditor"}


def users_file(directory: Path) -> Path:
    path = directory / "web-users.txt"
    path.write_text("# test users\n" + "".join(
        f"{name} {ROLES[name]} {generate_password_hash(PASSWORDS[name], method='scrypt')}\n" for name in PASSWORDS))
    return path


def web_config(directory: Path, **extra: Any) -> dict[str, Any]:
    return {"CDS_AUTH": "off", "CDS_BIND": "127.0.0.1:0", "CDS_LOG_LEVEL": "warning",
            "CDS_DATABASE_URL": f"sqlite:///{directory / 'audit.sqlite3'}",
            "CDS_WEB_USERS_FILE": str(users_file(directory)), "CDS_WEB_SECRET_KEY": SECRET,
            "NOW": lambda: NOW, **extra}


@pytest.fixture
def web_app(tmp_path: Path) -> Any:
    """A fresh app (for the Flask test client)."""
    return create_app(web_config(tmp_path))


class FormClient:
    """The Flask test client plus the session's CSRF token, as a browser would hold it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.client = app.test_client()
        self.token = ""

    def get(self, path: str, **kwargs: Any) -> Any:
        response = self.client.get(path, **kwargs)
        match = re.search(r'name="csrf_token" value="([^"]+)"', response.get_data(as_text=True))
        if match:
            self.token = match.group(1)
        return response

    def post(self, path: str, data: dict[str, Any], **kwargs: Any) -> Any:
        return self.client.post(path, data={"csrf_token": self.token, **data}, **kwargs)

    def sign_in(self, name: str) -> Any:
        self.get("/web/sign-in")
        answer = self.post("/web/sign-in", {"username": name, "password": PASSWORDS[name]})
        self.get("/web/sign-in")  # signing in starts a new session with a new CSRF token
        return answer


@pytest.fixture
def forms(web_app: Any) -> FormClient:
    return FormClient(web_app)


@dataclass
class Served:
    app: Any
    base: str
    store: Any
    state: dict[str, Any] = field(default_factory=dict)   # what one test leaves for the next


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The app on a real socket on 127.0.0.1 (werkzeug, threaded), for the browser."""
    directory = tmp_path_factory.mktemp("web")
    app = create_app(web_config(directory, CDS_LOG_LEVEL="info"))   # the sign-in test reads the log
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="web-test-server", daemon=True)
    thread.start()
    try:
        yield Served(app, f"http://127.0.0.1:{server.server_port}", app.extensions["cds_web"].store)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        app.extensions["cds_web"].store.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium from the Debian packages, with a fresh profile and no background traffic."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: apt-get install -y chromium chromium-driver "
                    "(.ci/run does this)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1366,900",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str, *, full_page: bool = False) -> Path:
    """Save the page as test-output/screenshots/<name>.png (the whole page when asked)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if full_page:
        # Chromium's DevTools protocol draws beyond the viewport in one picture.
        width, height = driver.execute_script(
            "return [document.documentElement.clientWidth, document.documentElement.scrollHeight]")
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 6000), "scale": 1}})
        path.write_bytes(base64.b64decode(shot["data"]))
    else:
        assert driver.save_screenshot(str(path)), f"screenshot {name} was not written"
    assert path.stat().st_size > 10_000, f"{path} looks empty"
    return path
