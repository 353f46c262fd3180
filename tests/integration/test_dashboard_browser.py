"""The live dashboard in a real headless browser (Debian's Chromium, driven by Playwright):
after a workload (a call that logs, a failing call, a map), the overview shows the app, its
functions, containers, recent calls with durations and the error, the logs and the GPUs; then,
without a reload, a call in flight appears, finishes, a new log line streams in, and an
image build shows while it runs and then as failed.
Screenshots are kept under test-artifacts/dashboard/ in the repository root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from ferry._client import Client

from ..conftest import REPO, ServerProcess
from .apps import dashboard_apps

CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/test.sh installs it)
ARTIFACTS = REPO / "test-artifacts" / "dashboard"
WAIT_MS = 30_000
BROKEN_IMAGE = "tests/integration/apps/metrics_image.py::broken_image"  # its last step fails


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright  # the `test` extra (scripts/install.sh)

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"No Chromium at {CHROMIUM}: install Debian's `chromium` package "
                           "(scripts/test.sh does).")
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium's own sandbox refuses to run as root (the CI machines run tests as root)
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess.start(tmp_path_factory.mktemp("ferry-dashboard-browser"), extra_env={"FERRY_GPUS": "A10:2"})
    yield proc
    proc.stop()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_the_dashboard_is_live_in_a_browser(browser, own_server: ServerProcess, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    own_server.use(monkeypatch)
    web = Client.for_url(own_server.url).request_sync("server.status")["web_url"]
    flag = tmp_path / "go"
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        with dashboard_apps.app.run(show_logs=False):
            assert dashboard_apps.chatty.remote("before-load") == "before-load"
            with pytest.raises(ValueError, match="dashboard-boom"):
                dashboard_apps.fails.remote()
            assert list(dashboard_apps.square.map(range(5))) == [0, 1, 4, 9, 16]

            page.goto(web + "/")
            page.wait_for_selector("#live-status.live", timeout=WAIT_MS)
            page.evaluate("window.__notReloaded = true")  # gone if the page ever reloads
            apps = page.locator("#apps")
            _expect_text(apps, "dashboard-browser")
            functions = page.locator("#functions")
            for tag in ("chatty", "fails", "square", "waits"):
                _expect_text(functions, tag)
            recent = page.locator("#calls-recent")
            _expect_text(recent, "ValueError('dashboard-boom')")  # the failing call, with its error
            _expect_text(recent, "map")
            assert recent.locator("tr", has_text="square").first.inner_text().count("5 / 5") == 1
            _expect_text(page.locator("#containers"), "local")
            live_containers = len(Client.for_url(own_server.url).request_sync("container.list"))
            _expect_text(page.locator("#live-counts"), f"1 / {live_containers}")
            _expect_text(page.locator("#logs"), "chatty says before-load")
            gpus = page.locator("#gpus")
            _expect_text(gpus, "A10 (FERRY_GPUS override)")
            assert gpus.locator("tr", has_text="free").count() == 2
            _shot(page, "overview-after-workload")

            # live: a call in flight shows up, then finishes; a new log line streams in
            waiting = dashboard_apps.waits.spawn(str(flag))
            in_flight = page.locator("#calls-in-flight")
            _expect_text(in_flight, "waits")
            _shot(page, "call-in-flight")
            flag.touch()
            assert waiting.get(timeout=60) == "done"
            page.wait_for_function("!document.querySelector('#calls-in-flight').innerText.includes('waits')",
                                   timeout=WAIT_MS)
            _expect_text(recent, "waits")
            assert dashboard_apps.chatty.remote("after-load") == "after-load"
            _expect_text(page.locator("#logs"), "chatty says after-load")
            _shot(page, "overview-live-updates")

            # an image build shows while it runs (the process runtime builds a venv), then its outcome
            build = subprocess.Popen([sys.executable, "-m", "ferry", "image", "build", BROKEN_IMAGE], cwd=REPO,
                                     env=own_server.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                images = page.locator("#images")
                _expect_text(images, "building")
                _expect_text(images, "ferry-package-that-exists-nowhere")
                _shot(page, "image-building")
                assert build.wait(timeout=240) == 1  # the package exists nowhere
            finally:
                if build.poll() is None:
                    build.kill()
                    build.wait()
            _expect_text(images.locator("tr", has_text="ferry-package-that-exists-nowhere"), "failed")
            assert page.evaluate("window.__notReloaded") is True

            # an app's page streams that app's new lines too
            page.locator("#apps a", has_text="dashboard-browser").click()
            page.wait_for_selector("#live-status.live", timeout=WAIT_MS)
            page.evaluate("window.__notReloaded = true")
            _expect_text(page.locator("#logs"), "chatty says after-load")  # from the page itself
            assert dashboard_apps.chatty.remote("on-the-app-page") == "on-the-app-page"
            _expect_text(page.locator("#logs"), "chatty says on-the-app-page")
            assert page.evaluate("window.__notReloaded") is True
            _shot(page, "app-page-live-logs")
    finally:
        page.close()


def test_artifacts_are_ignored_by_git() -> None:
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "test-artifacts/" in ignored


def _expect_text(locator, text: str) -> None:
    """Wait until `locator` shows `text` (the page redraws from its event stream)."""
    from playwright.sync_api import expect

    expect(locator).to_contain_text(text, timeout=WAIT_MS)
