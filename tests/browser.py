"""A real browser for the tests: the system's headless Chromium, driven by Playwright.

Playwright's Python package brings its own driver but no browser here: it launches the
Chromium the machine has (Debian's ``chromium``; another one named by BROKER_TEST_CHROMIUM),
so nothing is downloaded. Without Playwright or a Chromium the browser tests are skipped with
the reason, except under CI=true, where they fail (.ci/run installs Chromium).

Screenshots are test artifacts: they are kept in ``artifacts/browser/`` at the repository root,
or in ``browser/`` under the directory BROKER_TEST_ARTIFACTS names.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tests.helpers import Broker, free_port, start_broker, unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = ("chromium", "chromium-browser")


def chromium_path() -> str | None:
    named = os.environ.get("BROKER_TEST_CHROMIUM")
    if named:
        return shutil.which(named)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium() -> str:
    """The Chromium executable to test with, and Playwright to drive it; or a skip."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        unavailable("Playwright", f"{exc} (pip install -e '.[test]')")
    executable = chromium_path()
    if executable is None:
        unavailable("Chromium", "no chromium on PATH (apt-get install chromium, or set "
                                "BROKER_TEST_CHROMIUM)")
    assert executable is not None
    return executable


def launch(executable: str) -> Iterator[Browser]:
    """Chromium, headless, for as long as the caller holds the iterator."""
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, headless=True)
        except Error as exc:
            unavailable(f"Chromium at {executable}", str(exc).strip().splitlines()[0])
            return
        try:
            yield browser
        finally:
            browser.close()


def artifacts_dir() -> Path:
    base = os.environ.get("BROKER_TEST_ARTIFACTS")
    directory = (Path(base) if base else ROOT / "artifacts") / "browser"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def screenshot(page: Page, name: str) -> Path:
    """The whole page as ``NAME.png`` among the artifacts; its path is printed."""
    path = artifacts_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def localhost_broker(data: Path) -> Broker:
    """A broker whose public URL is ``http://localhost:PORT``: a host name, not an address,
    as a security key's relying party id must be a domain."""
    port = free_port()
    return start_broker(data, port=port,
                        env={"BROKER_SERVER_PUBLIC_URL": f"http://localhost:{port}"})


def site(broker: Broker) -> str:
    """The broker's public URL, as the browser reaches it."""
    return f"http://localhost:{broker.server.port}"
