"""The app in headless Chromium (Debian's `chromium`, driven by Playwright's Python client):
place three objects by clicking on the scene, compose, and see both result panels and the hit
counts. Saves a screenshot to $PROJCOMP_ARTIFACTS (default: a pytest temp folder).

Random-weight `tiny` checkpoints by default; $PROJCOMP_TEST_CHECKPOINTS=checkpoints runs the same
test over the shipped models (with $PROJCOMP_TEST_STEPS steps, default 2) -- that is how the
README's screenshot is taken:
    PROJCOMP_TEST_CHECKPOINTS=checkpoints PROJCOMP_TEST_STEPS=16 PROJCOMP_ARTIFACTS=docs \
        python -m pytest -q -s tests/test_browser.py
"""

import os
import re
import shutil
import sys

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from app_server import AppServer, make_zoo  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    zoo = os.environ.get("PROJCOMP_TEST_CHECKPOINTS") or make_zoo(str(tmp_path_factory.mktemp("zoo")), corrupt=None)
    srv = AppServer(os.path.abspath(zoo))
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1100})
        yield pg
        browser.close()


def _coords(page) -> list:
    """The x, y values shown in the objects table (rounded to 3 decimals, so they carry a '.')."""
    return [float(v) for v in re.findall(r"\d\.\d+", page.locator("#objects").inner_text())]


def _wait_rows(page, n, timeout=30_000):
    page.wait_for_function(
        "n => (document.querySelector('#objects').innerText.match(/\\d\\.\\d+/g) || []).length === 2 * n",
        arg=n, timeout=timeout)


@pytest.fixture
def artifacts(tmp_path_factory):
    out = os.environ.get("PROJCOMP_ARTIFACTS") or str(tmp_path_factory.mktemp("artifacts"))
    os.makedirs(out, exist_ok=True)
    return out


def test_click_three_objects_and_compose(server, page, artifacts):
    try:
        _click_three_and_compose(server, page, artifacts)
    except Exception:
        page.screenshot(path=os.path.join(artifacts, "app_clevr_failure.png"), full_page=True)
        print(server.read_log())
        raise


def _click_three_and_compose(server, page, out):
    page.set_default_timeout(60_000)
    page.goto(server.url)
    scene = page.locator("#scene img")
    scene.wait_for(state="visible")
    page.get_by_role("button", name="Clear").click()
    _wait_rows(page, 0)
    page.wait_for_timeout(1000)  # let the scene image finish updating before clicking on it
    for n, (fx, fy) in enumerate(((0.3, 0.55), (0.7, 0.55), (0.5, 0.75)), start=1):
        box = scene.bounding_box()
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        _wait_rows(page, n)
        page.wait_for_timeout(500)
    xs = _coords(page)
    assert len(xs) == 6, xs
    # The three clicks landed where they were aimed (x, y in [0, 1] image coordinates).
    for want in (0.3, 0.55, 0.7, 0.5, 0.75):
        assert any(abs(v - want) < 0.05 for v in xs), (want, xs)
    # Fewer steps and samples so the run is quick on a shared CPU.
    page.locator("#steps input[type=number]").fill(os.environ.get("PROJCOMP_TEST_STEPS", "2"))
    page.locator("#steps input[type=number]").press("Enter")
    page.locator("#samples input[type=number]").fill("2")
    page.locator("#samples input[type=number]").press("Enter")
    page.locator("#run").click()
    page.locator("#left img").wait_for(state="visible", timeout=120_000)
    page.locator("#right img").wait_for(state="visible", timeout=120_000)
    page.wait_for_function("document.querySelector('#hits').innerText.includes('places hit')", timeout=120_000)
    hits = page.locator("#hits").inner_text()
    assert re.search(r"\d+ / 6", hits), hits  # 3 objects x 2 samples, on each side
    assert "A: empty background" in hits and "B: unconditional background" in hits
    for side in ("#left img", "#right img"):
        assert page.locator(side).evaluate("img => img.complete && img.naturalWidth > 0")
    path = os.path.join(out, "app_clevr.png")
    page.screenshot(path=path, full_page=True)
    assert os.path.getsize(path) > 10_000
    print(f"screenshot: {path}\n{hits}")
