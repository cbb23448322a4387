"""The app in headless Chromium (Debian's `chromium`, driven by Playwright's Python client), as a
first-time visitor at 1280×800: compose and watch the progress text change, find the Compose button
and both result panels in view; click every example on every tab (result images, no error);
pick the one-call-per-step sampler and compose; place objects by clicking, select one by clicking
its ring, delete it (table and rings agree);
eleven clicks in one burst place ten objects and the 11th is refused; bad inputs give exactly one
message naming the field. Saves the first view after composing to $PROJCOMP_ARTIFACTS/app_clevr.png
(default: a pytest temp folder).

Random-weight `tiny` checkpoints by default (the shipped set's roles, with a colour per object); $PROJCOMP_TEST_CHECKPOINTS=checkpoints runs the same
test over the shipped models ($PROJCOMP_TEST_STEPS sets the sampler steps; default: the app's 16) --
that is how the README's screenshot is taken:
    PROJCOMP_TEST_CHECKPOINTS=checkpoints PROJCOMP_TEST_STEPS=16 PROJCOMP_ARTIFACTS=docs \
        python -m pytest -q -s tests/test_browser.py -k first_visit
(without -k, every test runs over the shipped models too)."""

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
from app_server import SHIPPED_LIKE, AppServer, make_zoo  # noqa: E402


import base64  # noqa: E402
import io  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

VIEW = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    """A tiny random SDXL pipeline folder (so the SDXL examples can run here), or None."""
    path = str(tmp_path_factory.mktemp("tiny_sdxl"))
    try:
        from projcomp.testing import tiny_sdxl_pipeline
        tiny_sdxl_pipeline(path)
    except Exception as e:  # noqa: BLE001 - diffusers missing: the SDXL examples are checked disabled
        print(f"tiny SDXL pipeline unavailable: {e}")
        return None
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_sdxl):
    zoo = (os.environ.get("PROJCOMP_TEST_CHECKPOINTS")
           or make_zoo(str(tmp_path_factory.mktemp("zoo")), corrupt=None, roles=SHIPPED_LIKE))
    srv = AppServer(os.path.abspath(zoo), env={"PROJCOMP_SDXL_MODELS": tiny_sdxl or ""})
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    pg = browser.new_page(viewport=VIEW)
    pg.set_default_timeout(120_000)
    pg.goto(server.url)
    pg.locator("#scene img").wait_for(state="visible")
    pg.wait_for_timeout(500)
    yield pg
    print(server.read_log()[-3000:])
    pg.close()


@pytest.fixture
def artifacts(tmp_path_factory):
    out = os.environ.get("PROJCOMP_ARTIFACTS") or str(tmp_path_factory.mktemp("artifacts"))
    os.makedirs(out, exist_ok=True)
    return out


STEPS = os.environ.get("PROJCOMP_TEST_STEPS")


def _watch(page, sel):
    """Record every distinct text `sel` shows from now on (window.__seen[sel])."""
    page.evaluate("""sel => { window.__seen = window.__seen || {}; const el = document.querySelector(sel);
        const log = window.__seen[sel] = [el.innerText];
        new MutationObserver(() => { const t = el.innerText; if (log[log.length - 1] !== t) log.push(t); })
          .observe(el, {subtree: true, childList: true, characterData: true}); }""", sel)


def _seen(page, sel):
    return page.evaluate("sel => window.__seen[sel]", sel)


def _wait_done(page, sel, timeout=300_000):
    """Wait until `sel` (watched) showed a sampling text and now says Done."""
    page.wait_for_function("""sel => { const log = window.__seen[sel] || [];
        return log.some(t => t.includes('Sampling')) && log[log.length - 1].startsWith('Done'); }""",
                           arg=sel, timeout=timeout)


def _run_examples(page, tab, progress, timings):
    """Click each example button #ex-<tab>-<i> in turn and wait until `progress` is done; yields i
    after each (the caller checks what it shows) and records click-to-done seconds in `timings`."""
    for i in range(page.locator(f"[id^=ex-{tab}-]").count()):
        _watch(page, progress)
        t0 = time.time()
        button = page.locator(f"#ex-{tab}-{i}")
        button.click()
        _wait_done(page, progress)
        timings[button.inner_text()] = round(time.time() - t0, 1)
        yield i


def _toasts(page):
    return page.locator(".toast-message-text").all_inner_texts()


def _no_error(page):
    assert _toasts(page) == [], _toasts(page)
    for sel in ("#left", "#right", "#progress", "#hits"):
        if page.locator(sel).count():
            assert "Error" not in page.locator(sel).inner_text(), (sel, page.locator(sel).inner_text())


def _image_loaded(page, sel, timeout=30_000):
    """True once `sel` shows a decoded image. The progress text can say Done a moment before the
    browser has fetched the new image (seen on a loaded machine), so this waits, up to `timeout`."""
    try:
        page.wait_for_function("""sel => { const img = document.querySelector(sel + ' img');
            return !!img && img.complete && img.naturalWidth > 0; }""", arg=sel, timeout=timeout)
        return True
    except sync_api.TimeoutError:
        return False


def _coords(page) -> list:
    """The x, y values shown in the objects table (rounded to 3 decimals, so they carry a '.')."""
    return [float(v) for v in re.findall(r"\d\.\d+", page.locator("#objects").inner_text())]


def _wait_rows(page, n, timeout=30_000):
    page.wait_for_function(
        "n => (document.querySelector('#objects').innerText.match(/\\d\\.\\d+/g) || []).length === 2 * n",
        arg=n, timeout=timeout)


def _set_slider(page, sel, value):
    page.locator(f"{sel} input[type=number]").fill(str(value))
    page.locator(f"{sel} input[type=number]").press("Enter")


def _inside(box):
    return (box is not None and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= VIEW["width"]
            and box["y"] + box["height"] <= VIEW["height"])


def test_first_visit_compose_progress_and_layout(page, artifacts):
    """At 1280×800: Compose, the progress text changes at least twice while sampling, the Compose
    button and both result panels are in view afterwards, the results carry the hit counts."""
    if STEPS:
        _set_slider(page, "#steps", STEPS)
        page.wait_for_timeout(300)
    page.evaluate("window.scrollTo(0, 0)")
    _watch(page, "#progress")
    page.locator("#run").click()
    _wait_done(page, "#progress")
    page.wait_for_function("document.querySelector('#hits').innerText.includes('places hit')")
    sampling = [t for t in _seen(page, "#progress") if t.startswith("Sampling")]
    print("progress texts seen:", len(sampling), sampling[:3], "...", sampling[-1:])
    assert len(sampling) >= 3, sampling  # the text changed at least twice during the composition
    assert _image_loaded(page, "#left") and _image_loaded(page, "#right")
    _no_error(page)
    hits = page.locator("#hits").inner_text()
    assert "A: empty background" in hits and "B: unconditional background" in hits
    assert re.search(r"\d+ / 12", hits), hits  # 3 objects x 4 samples per side
    boxes = {sel: page.locator(sel).bounding_box() for sel in ("#run", "#left", "#right")}
    print("bounding boxes at 1280x800:", boxes, "scrollY", page.evaluate("window.scrollY"))
    assert all(_inside(b) for b in boxes.values()), boxes
    path = os.path.join(artifacts, "app_clevr.png")
    page.screenshot(path=path)
    assert os.path.getsize(path) > 10_000
    print(f"screenshot: {path}\n{hits}")


def test_the_one_call_per_step_sampler_composes(page):
    """Picking DPM-Solver++(2M) composes with one network call per step (the done text says so) and
    the results carry the hit counts like Heun's; picking Heun again gives 2N - 1 calls."""
    page.locator("#solver label", has_text="DPM-Solver++").click()
    _watch(page, "#progress")
    page.locator("#run").click()
    _wait_done(page, "#progress")
    done = _seen(page, "#progress")[-1]
    m = re.search(r"(\d+) DPM-Solver\+\+\(2M\) steps, (\d+) network calls", done)
    assert m and m.group(1) == m.group(2), done
    page.wait_for_function("document.querySelector('#hits').innerText.includes('DPM-Solver++(2M) steps')")
    assert re.search(r"\d+ / 12", page.locator("#hits").inner_text())
    _no_error(page)
    page.locator("#solver label", has_text="Heun").click()
    _watch(page, "#progress")
    page.locator("#run").click()
    _wait_done(page, "#progress")
    m = re.search(r"(\d+) Heun steps, (\d+) network calls", _seen(page, "#progress")[-1])
    assert m and int(m.group(2)) == 2 * int(m.group(1)) - 1, _seen(page, "#progress")[-1]


def _scene_pixels(page) -> np.ndarray:
    """The scene image exactly as served (PNG, lossless), read back through a canvas."""
    from PIL import Image

    url = page.locator("#scene img").evaluate("""img => { const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight; c.getContext('2d').drawImage(img, 0, 0);
        return c.toDataURL('image/png'); }""")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def _click_scene(page, fx, fy):
    box = page.locator("#scene img").bounding_box()
    page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])


def test_click_to_place_select_a_ring_and_delete_it(page):
    from projcomp.tabs import clevr

    page.locator("#clear").click()
    _wait_rows(page, 0)
    page.wait_for_timeout(800)
    for n, (fx, fy) in enumerate(((0.3, 0.55), (0.7, 0.55), (0.5, 0.75)), start=1):
        _click_scene(page, fx, fy)
        _wait_rows(page, n)
        page.wait_for_timeout(400)
    xs = _coords(page)
    for want in (0.3, 0.55, 0.7, 0.5, 0.75):  # the clicks landed where they were aimed
        assert any(abs(v - want) < 0.03 for v in xs), (want, xs)
    _click_scene(page, 0.705, 0.56)  # on ring 2
    page.wait_for_function("document.querySelector('#scene-note').innerText.includes('Object 2 selected')")
    page.wait_for_timeout(500)
    objs = clevr.parse_objects([xs[i:i + 2] for i in range(0, 6, 2)])
    assert np.array_equal(_scene_pixels(page), clevr.draw_scene(objs, 1))  # ring 2 drawn as selected
    page.locator("#delete").click()
    _wait_rows(page, 2)
    page.wait_for_function("document.querySelector('#scene-note').innerText.includes('deleted')")
    page.wait_for_timeout(800)
    left = _coords(page)
    assert len(left) == 4 and not any(abs(v - 0.7) < 0.03 for v in left[0::2]), left
    # Table and rings agree: the scene is exactly the drawing of the table's objects, none selected.
    objs = clevr.parse_objects([left[i:i + 2] for i in range(0, 4, 2)])
    assert np.array_equal(_scene_pixels(page), clevr.draw_scene(objs, None))
    assert _toasts(page) == []


def test_every_example_on_every_tab(page, tiny_sdxl):
    timings = {}
    page.evaluate("window.scrollTo(0, 0)")
    for i in range(page.locator("[id^=ex-clevr-]").count()):
        btn = page.locator(f"#ex-clevr-{i}")
        label = btn.inner_text()
        _watch(page, "#progress")
        t0 = time.time()
        btn.click()
        _wait_done(page, "#progress")
        timings[label] = round(time.time() - t0, 1)
        note = page.locator("#scene-note").inner_text()
        assert f"Example {label} loaded" in note, note
        assert _image_loaded(page, "#left") and _image_loaded(page, "#right")
        page.wait_for_function("document.querySelector('#hits').innerText.includes('places hit')")
        _no_error(page)
        # The state it shows is restored: the seed and sample count of the example are in the inputs.
        m = re.search(r"seed (\d+), (\d+) samples", note)
        assert page.locator("#seed input").input_value() == m.group(1)
        assert page.locator("#samples input[type=number]").input_value() == m.group(2)
        if label == "a colour per object":  # composed with the colour guidance slider's value
            g = float(page.locator("#color-guidance input[type=number]").input_value())
            assert f"Colour guidance {g:g}" in page.locator("#hits").inner_text()
    page.get_by_role("tab", name="Colours (Fig 5)").click()
    for _ in _run_examples(page, "colours", "#cprogress", timings):
        assert _image_loaded(page, "#cout") and "detected in" in page.locator("#cmd").inner_text()
        assert _toasts(page) == []
    page.get_by_role("tab", name="Theory lab").click()
    for i in range(page.locator("[id^=ex-theory-]").count()):
        target = "#tmd" if i < 2 else "#gmd"
        _watch(page, target)
        t0 = time.time()
        page.locator(f"#ex-theory-{i}").click()
        page.wait_for_function("sel => { const l = window.__seen[sel]; return l.length > 1 && l[l.length - 1].length > 20; }",
                               arg=target)
        timings[page.locator(f"#ex-theory-{i}").inner_text()] = round(time.time() - t0, 1)
        assert _image_loaded(page, "#tplot" if i < 2 else "#gplot")
        assert _toasts(page) == []
    page.get_by_role("tab", name="SDXL prompts").click()
    status = page.locator("#sdxl-status").inner_text()
    if tiny_sdxl is None:
        assert status.startswith("Disabled here") and page.locator("#srun").is_disabled()
    else:
        assert status.startswith("Ready") and page.locator("#srun").is_enabled()
        _set_slider(page, "#sdxl-steps", 2)
        for _ in _run_examples(page, "sdxl", "#sprogress", timings):
            assert page.locator("#sgal img").first.evaluate("img => img.complete && img.naturalWidth > 0")
            assert _toasts(page) == []
    print("example timings (s, click to done):", timings)


def test_bad_inputs_show_one_message_naming_the_field(page):
    page.locator("#seed input").fill("-1")
    page.locator("#seed input").press("Tab")
    page.locator("#run").click()
    page.wait_for_function("document.querySelectorAll('.toast-message-text').length > 0")
    page.wait_for_timeout(1500)  # a second message would have arrived by now
    assert _toasts(page) == ["seed: -1 is out of range (allowed 0 to 2147483647)"]



def test_eleven_quick_clicks_place_ten_objects_and_the_eleventh_is_one_message(page):
    """Eleven clicks on the floor in one burst (all of them before the server answers the first): none
    is dropped while an earlier one is being handled, each sees the objects the earlier ones left,
    so ten objects are placed and the 11th click is refused with exactly one message naming the field."""
    page.locator("#clear").click()
    _wait_rows(page, 0)
    page.wait_for_timeout(800)
    spots = [(x, y) for y in (0.45, 0.62, 0.79) for x in (0.12, 0.31, 0.5, 0.69, 0.88)][:11]
    # Mouse clicks dispatched from one script run: the browser cannot handle a reply in between.
    page.locator("#scene img").evaluate("""(img, spots) => { const r = img.getBoundingClientRect();
        for (const [fx, fy] of spots) img.dispatchEvent(new MouseEvent('click', {bubbles: true, cancelable: true,
            view: window, clientX: r.left + fx * r.width, clientY: r.top + fy * r.height})); }""", spots)
    page.wait_for_function("document.querySelectorAll('.toast-message-text').length > 0", timeout=60_000)
    _wait_rows(page, 10)
    page.wait_for_timeout(1500)  # a second message would have arrived by now
    toasts = _toasts(page)
    print("11th click:", toasts)
    assert toasts == ["objects: at most 10 are allowed; select one and delete it first"], toasts
    xs = _coords(page)
    placed = {min(range(11), key=lambda j: abs(spots[j][0] - x) + abs(spots[j][1] - y))
              for x, y in zip(xs[0::2], xs[1::2])}
    assert len(placed) == 10, (spots, xs)  # ten different spots, each where it was clicked:
    for x, y in zip(xs[0::2], xs[1::2]):  # within 2.5 px of the 320-px scene, near its edges too
        assert any(abs(x - fx) < 0.008 and abs(y - fy) < 0.008 for fx, fy in spots), (x, y, spots)
