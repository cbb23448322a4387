"""The real app (`python app.py` in a subprocess), driven endpoint by endpoint with gradio_client.

Random-weight checkpoints (the `tiny` training preset's size) stand in for the trained ones: the
images are noise, but every path — loading, composing, sampling, detection, drawing, validation,
the queue — is the real one. One checkpoint is corrupt on purpose. The tests without a server
drive `projcomp.tabs` (the per-tab logic) and `app.create_app` directly.
"""

import math
import os
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from gradio_client.utils import Status  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from app_server import AppServer, make_zoo  # noqa: E402

ENDPOINTS = {"/compose_clevr", "/compose_clevr_live", "/contribution_map", "/add_object", "/random_objects",
             "/clear_objects", "/redraw_scene", "/color_preview", "/compose_colors", "/compose_colors_live",
             "/sdxl_status", "/sdxl_heuristic", "/sdxl_compose", "/sdxl_compose_live", "/theory_gauss2d",
             "/theory_appg"}


def T(rows):
    return {"headers": ["x", "y", "weight"], "data": rows}


THREE = [[0.3, 0.55, 1.0], [0.55, 0.42, 1.0], [0.7, 0.7, 1.0]]


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    """A tiny offline SDXL pipeline, built in a thread while the app starts."""
    path = str(tmp_path_factory.mktemp("tiny_sdxl"))
    box = {}

    def build():
        try:
            from projcomp.testing import tiny_sdxl_pipeline
            tiny_sdxl_pipeline(path)
        except Exception as e:  # diffusers missing, ...
            box["error"] = e

    t = threading.Thread(target=build, daemon=True)
    t.start()
    return path, t, box


@pytest.fixture(scope="module")
def server(tmp_path_factory, sdxl_dir):
    zoo = make_zoo(str(tmp_path_factory.mktemp("zoo")))
    srv = AppServer(zoo, env={"PROJCOMP_SDXL_MODELS": sdxl_dir[0], "PROJCOMP_CONCURRENCY": "2",
                              "PROJCOMP_QUEUE_SIZE": "16"})
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False)


def _img(path):
    return np.asarray(Image.open(path).convert("RGB"))


def _expect_error(client, match, *args, api_name):
    with pytest.raises(AppError) as ei:
        client.predict(*args, api_name=api_name)
    assert match.lower() in str(ei.value).lower(), str(ei.value)


def test_missing_role_and_unreadable_config_are_reported(tmp_path):
    """No server needed: what the app's status line and disabled options are built from."""
    from projcomp.tabs import clevr, common

    root = str(tmp_path)
    common.write_random_zoo(root, roles=("location", "color"))
    os.makedirs(os.path.join(root, "broken"))
    with open(os.path.join(root, "broken", "config.json"), "w") as f:
        f.write("{not json")
    zoo, problems = common.open_zoo(root)
    assert len(problems) == 1 and "broken" in problems[0]
    st = common.zoo_status(zoo)
    assert st["roles"]["empty"] is None and st["roles"]["clutter"] is None and st["roles"]["location"]
    assert st["backgrounds"] == {"empty": False, "bayes": True, "clutter": False}
    assert st["location_colors"] == [] and st["checkpoints"] == sorted(st["checkpoints"]) and len(st["checkpoints"]) == 2
    with pytest.raises(common.InputError, match="^background: 'empty' is unavailable"):
        clevr.check_request(zoo, "empty", 1, 0, 1)
    res = clevr.compose(zoo, [clevr.Obj(0.5, 0.5)], "bayes", 1, 0, 1, True)
    assert res.settings == ("B",)  # the counterpart (A) is dropped, not a crash


def test_app_builds_without_work_at_import_and_the_tab_logic_has_no_gradio():
    """`import app` loads no checkpoint and builds nothing; projcomp.tabs never imports gradio."""
    code = ("import sys, app; assert not hasattr(app, 'demo') and callable(app.create_app); "
            "import projcomp.tabs.clevr, projcomp.tabs.colours, projcomp.tabs.sdxl, projcomp.tabs.theory; "
            "mods = [m for m in sys.modules if m.startswith('projcomp.tabs')]; print(len(mods))")
    import subprocess
    r = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    code = ("import sys, projcomp.tabs.clevr, projcomp.tabs.colours, projcomp.tabs.sdxl, projcomp.tabs.theory, "
            "projcomp.tabs.common; assert 'gradio' not in sys.modules, 'projcomp.tabs imported gradio'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def _component(app, elem_id):
    return next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def test_colour_control_follows_the_location_schema(tiny_zoo_dir, tiny_color_zoo_dir):
    """The per-object colour appears only when the location net's schema has "colors", and the
    chosen colour reaches the net as {"xy": ..., "color": ...} (a different composition)."""
    import torch

    import app
    from projcomp.sampling import noise_for_seeds
    from projcomp.tabs import clevr, common

    plain, _ = common.open_zoo(tiny_zoo_dir)
    coloured, _ = common.open_zoo(tiny_color_zoo_dir)
    assert common.zoo_status(plain)["location_colors"] == []
    assert "red" in common.zoo_status(coloured)["location_colors"]
    a_plain, a_col = app.create_app(plain), app.create_app(coloured)
    assert not _component(a_plain, "obj-color").visible and _component(a_col, "obj-color").visible
    assert _component(a_plain, "objects").headers == ["x", "y", "weight"]
    assert _component(a_col, "objects").headers == ["x", "y", "weight", "colour"]
    # Table <-> objects, colours checked against the schema.
    colors = common.zoo_status(coloured)["location_colors"]
    objs = clevr.parse_objects([[0.3, 0.5, 1.0, "red"], [0.6, 0.6, 1.0, "any"]], colors)
    assert [o.color for o in objs] == ["red", None]
    assert clevr.to_table(objs, colors)["data"][0] == [0.3, 0.5, 1.0, "red"]
    with pytest.raises(common.InputError, match="^object 1 colour: 'pink'"):
        clevr.parse_objects([[0.3, 0.5, 1.0, "pink"]], colors)
    with pytest.raises(common.InputError, match="^object 1 colour"):
        clevr.parse_objects([[0.3, 0.5, 1.0, "red"]], [])
    # The colour changes the composed denoiser of the colour-aware net (settings A and B).
    x = noise_for_seeds([0], (3, 16, 16)) * 2.0
    sig = torch.tensor([2.0])
    for s in ("A", "B"):
        d_any, _, _, used_any = clevr.build_denoiser(coloured, s, [clevr.Obj(0.3, 0.5)])
        d_red, _, _, used_red = clevr.build_denoiser(coloured, s, [clevr.Obj(0.3, 0.5, 1.0, "red")])
        assert (used_any, used_red) == (False, True)
        with torch.no_grad():
            assert not torch.allclose(d_any(x, sig), d_red(x, sig))
    # A net without colours ignores them and says so.
    res = clevr.compose(coloured, [clevr.Obj(0.3, 0.5, 1.0, "red")], "clutter", 1, 0, 1, False)
    assert res.config["colors_used"] == {"C": False, "B": True}
    assert "Colours ignored by C: cluttered background" in clevr.headline(res, [clevr.Obj(0.3, 0.5, 1.0, "red")], 1, False)
    assert any(ex["label"] == "a colour per object" for ex in clevr.examples(common.zoo_status(coloured)))
    assert not any(ex["label"] == "a colour per object" for ex in clevr.examples(common.zoo_status(plain)))
    # Colour guidance g: only for a net with colours; a coloured term becomes D_xy + g (D_xyc - D_xy).
    assert not _component(a_plain, "color-guidance").visible and _component(a_col, "color-guidance").visible
    assert _component(a_col, "color-guidance").value == clevr.DEFAULT_GUIDANCE
    red = [clevr.Obj(0.3, 0.5, 1.0, "red")]
    with torch.no_grad():
        d_any = clevr.build_denoiser(coloured, "A", [clevr.Obj(0.3, 0.5)])[0](x, sig)
        d_red = clevr.build_denoiser(coloured, "A", red)[0](x, sig)
        d_g3 = clevr.build_denoiser(coloured, "A", red, color_guidance=3.0)[0](x, sig)
    torch.testing.assert_close(d_g3, d_any + 3.0 * (d_red - d_any), atol=1e-4, rtol=1e-4)
    res = clevr.compose(coloured, red, "empty", 1, 0, 1, False, color_guidance=2.0)
    assert res.config["color_guidance"] == 2.0 and "Colour guidance 2" in clevr.headline(res, red, 1, False)
    for bad in (0.5, 9, "x", float("nan")):
        with pytest.raises(common.InputError, match="^colour guidance: "):
            clevr.check_guidance(bad)


def test_the_colour_role_sees_the_object_empty_net(tiny_zoo_dir, tiny_color_zoo_dir, tmp_path):
    """An object-empty net (a colour per object, the 'empty' label) serves the location role and also
    the colour role, preferred over a plain colour net at the same resolution: the status line names
    the net the Colours tab samples (experiments.color_spec)."""
    import shutil

    import app
    from projcomp.tabs import colours, common
    from projcomp.zoo import Zoo

    zoo, _ = common.open_zoo(tiny_color_zoo_dir)
    assert zoo.entries["clevr-location-16"]["dataset"]["preset"] == "object-empty"
    assert zoo.role_of("clevr-location-16") == "location" and zoo.role_of("clevr-color-16") == "color"
    assert zoo.find("location") == "clevr-location-16" and zoo.find("color") == "clevr-location-16"
    assert colours._spec(zoo).terms[0].model == zoo.find("color")
    st = common.zoo_status(zoo)
    assert st["roles"]["color"] == "clevr-location-16" and "Missing role" not in app.status_markdown(zoo, st, [])
    # Without a plain colour net the object-empty net still serves the colour role ...
    only = tmp_path / "object-only"
    shutil.copytree(tiny_color_zoo_dir, only)
    shutil.rmtree(only / "clevr-color-16")
    zoo2 = Zoo(str(only))
    assert zoo2.find("color") == "clevr-location-16" and colours.has_color_net(zoo2)
    assert "Missing role" not in app.status_markdown(zoo2, common.zoo_status(zoo2), [])
    # ... a location net without colours does not.
    plain = tmp_path / "plain"
    shutil.copytree(tiny_zoo_dir, plain)
    shutil.rmtree(plain / "clevr-color-16")
    zoo3 = Zoo(str(plain))
    assert not zoo3.has("color") and not colours.has_color_net(zoo3)
    assert "Missing role(s): color" in app.status_markdown(zoo3, common.zoo_status(zoo3), [])


def test_scene_editing_select_move_delete():
    from projcomp.tabs import clevr, common

    objs = [clevr.Obj(0.3, 0.55), clevr.Obj(0.7, 0.55)]
    objs, sel, note = clevr.click(objs, None, 0.71, 0.56)  # on ring 2: select it
    assert sel == 1 and len(objs) == 2 and "Object 2 selected" in note
    objs, sel, note = clevr.click(objs, sel, 0.5, 0.8)  # elsewhere: move it there
    assert sel is None and (objs[1].x, objs[1].y) == (0.5, 0.8) and "moved" in note
    objs, sel, _ = clevr.click(objs, None, 0.5, 0.3)  # nothing there, nothing selected: add
    assert len(objs) == 3 and sel is None
    objs, sel, _ = clevr.click(objs, None, 0.3, 0.55)
    assert sel == 0
    with_sel = clevr.draw_scene(objs, sel)
    objs, sel, note = clevr.delete(objs, sel)
    assert [(o.x, o.y) for o in objs] == [(0.5, 0.8), (0.5, 0.3)] and sel is None and "deleted" in note
    assert not np.array_equal(with_sel, clevr.draw_scene(objs, None))
    with pytest.raises(common.InputError, match="^selected object: none selected"):
        clevr.delete(objs, None)
    full = [clevr.Obj(0.05 + 0.09 * i, 0.5) for i in range(10)]
    with pytest.raises(common.InputError, match="^objects: at most 10"):
        clevr.click(full, None, 0.5, 0.9)


def test_results_are_legible():
    """Sharp vs smooth upsampling, outline markers or none, a seed caption per tile, a colour-blind-safe
    hit/miss pair (Okabe-Ito sky blue / orange, also solid vs dashed)."""
    from projcomp.tabs import clevr, common

    img = np.full((2, 32, 32, 3), 128, np.uint8)
    img[:, 16:20, 8:12] = (200, 30, 30)
    objs = [clevr.Obj(0.3, 0.55), clevr.Obj(0.7, 0.55)]
    verdicts = [{"ok": [True, False], "detections": [{"center": [10.0, 17.0]}]}] * 2
    sharp = clevr.panel(img, objs, [5, 6], "A", 192, "sharp", "outline", verdicts)
    smooth = clevr.panel(img, objs, [5, 6], "A", 192, "smooth", "outline", verdicts)
    bare = clevr.panel(img, objs, [5, 6], "A", 192, "sharp", "off", verdicts)
    assert sharp.shape == smooth.shape and sharp.shape[1] >= 2 * 192
    assert not np.array_equal(sharp, smooth) and not np.array_equal(sharp, bare)
    # Ring colours: the hit ring (object 1) has sky-blue pixels, the missed one (object 2) orange.
    tile = sharp[24:24 + 192, :192]
    near1 = tile[int(0.55 * 192) - 30: int(0.55 * 192) + 30, int(0.3 * 192) - 30: int(0.3 * 192) + 30]
    near2 = tile[int(0.55 * 192) - 30: int(0.55 * 192) + 30, int(0.7 * 192) - 30: int(0.7 * 192) + 30]
    assert (near1 == common.HIT_RGB).all(-1).any() and not (near1 == common.MISS_RGB).all(-1).any()
    assert (near2 == common.MISS_RGB).all(-1).any() and not (near2 == common.HIT_RGB).all(-1).any()
    # Outline only: the object's own pixels inside the ring are untouched.
    assert (tile[int(0.55 * 192) + 2, int(0.3 * 192) - 5] == (200, 30, 30)).all()


def test_heatmap_numbers_contrast_with_their_cells():
    from projcomp.tabs.common import readable_text_color

    assert readable_text_color((0.4, 0.0, 0.12)) == "white"   # dark red
    assert readable_text_color((0.02, 0.19, 0.38)) == "white"  # dark blue
    assert readable_text_color((0.97, 0.97, 0.97)) == "black"  # near-white middle


def test_project_errors_are_messages_and_bugs_are_logged_with_a_traceback(capfd):
    """app.guard: a ProjcompError becomes one gr.Error with its text and nothing in the log (Gradio is
    told not to print a traceback); any other exception is logged once as an internal error with its
    traceback, and the visitor is told so. Plain and streaming handlers alike."""
    import gradio as gr

    import app
    from projcomp.tabs import common

    def user():
        raise common.InputError("seed", "-1 is out of range (allowed 0 to 2147483647)")

    def bug():
        return {}["no such key"]

    def stream(fail):
        yield 1
        fail()

    capfd.readouterr()
    for fn in (app.guard(user), lambda: list(app.guard(stream)(user))):
        with pytest.raises(gr.Error) as ei:
            fn()
        assert ei.value.message == "seed: -1 is out of range (allowed 0 to 2147483647)"
        assert ei.value.print_exception is False
        assert capfd.readouterr().err == ""
    for fn in (app.guard(bug), lambda: list(app.guard(stream)(bug))):
        with pytest.raises(gr.Error) as ei:
            fn()
        assert ei.value.message == "Internal error (KeyError); it is logged on the server."
        assert ei.value.print_exception is False  # logged once, here:
        err = capfd.readouterr().err
        assert err.startswith("[app] internal error: KeyError: 'no such key'")
        assert err.count("Traceback (most recent call last)") == 1 and 'return {}["no such key"]' in err


def test_the_server_log_is_clean_at_start_and_after_visitor_errors(server, client):
    """No error or warning line while the app starts; a visitor's bad input (a message, streamed or
    not) adds no traceback to the log."""
    import re

    assert not [ln for ln in server.start_log.splitlines() if re.search(r"error|warn|traceback", ln, re.I)], \
        server.start_log
    start = server.log_size()
    bad = T([[0.3, 0.5, 50]])
    for api in ("/compose_clevr", "/compose_clevr_live"):
        _expect_error(client, "object 1 weight: 50 is too large", bad, "empty", 2, 0, 1, True, api_name=api)
    _expect_error(client, "objects: at most 10", 0.5, 0.5, 1.0, T([[0.05 + 0.09 * i, 0.5, 1.0] for i in range(10)]),
                  api_name="/add_object")
    time.sleep(0.5)
    new = server.read_log(start)
    assert "Traceback" not in new and "Error" not in new, new


def test_every_endpoint_is_exposed(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert ENDPOINTS <= set(api["named_endpoints"]), set(api["named_endpoints"])


def test_compose_clevr_side_by_side_same_seeds(client):
    left, right, md = client.predict(T(THREE), "empty", 2, 5, 2, True, api_name="/compose_clevr")
    a, b = _img(left), _img(right)
    assert a.shape == b.shape and a.shape[0] >= 128 and a.shape[1] > a.shape[0]  # two tiles side by side
    assert not np.array_equal(a, b)  # different backgrounds, different images
    assert "places hit" in md and "/ 6**" in md  # 3 objects x 2 samples per side
    assert "seeds 5–6" in md and md.index("A: empty background") < md.index("B: unconditional background")
    # Same request, same pixels (one generator per seed); another seed, other pixels.
    left2, _, _ = client.predict(T(THREE), "empty", 2, 5, 2, True, api_name="/compose_clevr")
    assert np.array_equal(a, _img(left2))
    left3, _, _ = client.predict(T(THREE), "empty", 2, 9, 2, True, api_name="/compose_clevr")
    assert not np.array_equal(a, _img(left3))


def test_bayes_and_zero_objects(client):
    left, right, md = client.predict(T(THREE[:1]), "bayes", 1, 0, 1, False, api_name="/compose_clevr")
    assert md.index("B: unconditional background") < md.index("A: empty background")
    left, right, md = client.predict(T([]), "empty", 1, 0, 1, True, api_name="/compose_clevr")
    assert "No objects" in md and os.path.isfile(left)


def test_object_editing(client):
    from projcomp.tabs import clevr

    rows, scene = client.predict(0.25, 0.5, -1.0, T(THREE), api_name="/add_object")
    assert rows["data"][-1] == [0.25, 0.5, -1.0] and len(rows["data"]) == 4
    assert _img(scene).shape == (clevr.DISPLAY, clevr.DISPLAY, 3)
    rows, scene = client.predict(5, 3, api_name="/random_objects")[:2]
    xy = np.array([r[:2] for r in rows["data"]])
    assert xy.shape == (5, 2) and (xy >= 0).all() and (xy <= 1).all()
    assert client.predict(5, 3, api_name="/random_objects")[0]["data"] == rows["data"]  # seeded
    cleared = client.predict(api_name="/clear_objects")[0]
    assert cleared["data"] in ([], [[]], None) or all(all(c in (None, "") for c in r) for r in cleared["data"])
    with_marks = _img(client.predict(T(THREE), api_name="/redraw_scene"))
    empty = _img(client.predict(T([]), api_name="/redraw_scene"))
    assert with_marks.shape == empty.shape and not np.array_equal(with_marks, empty)
    ten = [[0.05 + 0.09 * i, 0.5, 1.0] for i in range(10)]
    _expect_error(client, "objects: at most 10", 0.5, 0.5, 1.0, T(ten), api_name="/add_object")
    _expect_error(client, "x: 1.5 is above the maximum 1", 1.5, 0.5, 1.0, T([]), api_name="/add_object")


BAD_INPUTS = [  # (what, arguments of /compose_clevr or /sdxl_compose, the message's start)
    ("NaN weight", (T([[0.3, 0.5, "nan"]]), "empty", 2, 0, 1, True), "object 1 weight: 'nan' is not a finite number"),
    ("weight 50", (T([[0.3, 0.5, 50]]), "empty", 2, 0, 1, True), "object 1 weight: 50 is too large"),
    ("text weight", (T([[0.3, 0.5, "heavy"]]), "empty", 2, 0, 1, True), "object 1 weight: 'heavy' is not a number"),
    ("x = 1.5", (T([[1.5, 0.5, 1.0]]), "empty", 2, 0, 1, True), "object 1 x: 1.5 is outside the image"),
    ("seed -1", (T(THREE), "empty", 2, -1, 1, True), "seed: -1 is out of range"),
    ("steps 0", (T(THREE), "empty", 0, 0, 1, True), "steps: 0 is out of range"),
    ("steps 10000", (T(THREE), "empty", 10000, 0, 1, True), "steps: 10000 is out of range"),
    ("samples 9", (T(THREE), "empty", 2, 0, 9, True), "samples: 9 is out of range"),
    ("11th object", (T([[0.05 + 0.08 * i, 0.5, 1.0] for i in range(11)]), "empty", 2, 0, 1, True),
     "objects: 11 placed, at most 10"),
]


@pytest.mark.parametrize("what,args,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_each_bad_input_is_one_message_naming_the_field(client, what, args, message):
    """One error per request, whose text starts with the field it is about (the API sees what the
    browser's toast shows)."""
    for api in ("/compose_clevr", "/compose_clevr_live"):
        with pytest.raises(AppError) as ei:
            client.predict(*args, api_name=api)
        assert str(ei.value).startswith(message), (what, str(ei.value))


def test_bad_inputs_give_messages_and_the_app_keeps_serving(server, client):
    _expect_error(client, "prompts: the list is empty", {"headers": ["prompt", "weight"], "data": [["", 1.0]]}, "", 2, 0, 1,
                  "stabilityai/stable-diffusion-xl-base-1.0", api_name="/sdxl_compose")
    _expect_error(client, "not in the list of choices", {"headers": ["prompt", "weight"], "data": [["a dog", 1.0]]}, "", 2, 0, 1,
                  "evil/model", api_name="/sdxl_compose")
    # The corrupt checkpoint (clevr-clutter-16/model.safetensors): a message naming the file.
    _expect_error(client, "clevr-clutter-16", T(THREE), "clutter", 2, 0, 1, True, api_name="/compose_clevr")
    _expect_error(client, "safetensors", T(THREE), "clutter", 2, 0, 1, True, api_name="/compose_clevr")
    _expect_error(client, "colours: pick at least two colours", ["red"], 1.0, 2, 0, 1, True, api_name="/compose_colors")
    _expect_error(client, "objects: place at least one object", T([]), 1.0, 0, api_name="/contribution_map")
    assert server.alive()
    left, right, md = client.predict(T(THREE), "empty", 1, 0, 1, True, api_name="/compose_clevr")
    assert os.path.isfile(left) and os.path.isfile(right)


def test_contribution_map(client):
    img, md = client.predict(T(THREE[:2]), 2.0, 0, api_name="/contribution_map")
    a = _img(img)
    assert a.shape[0] > 100 and a.shape[1] > 2 * 100  # two rows (A, B), two concept columns
    assert "A:" in md and "B:" in md and "σ = 2" in md


def test_colours(client):
    hist, heat, md = client.predict(["yellow", "blue", "red"], api_name="/color_preview")
    assert os.path.isfile(hist) and os.path.isfile(heat)
    assert "Lemma 8.1" in md and md.count("| ") >= 3 and "cos" in md
    grid, md = client.predict(["yellow", "blue"], 1.0, 2, 0, 2, True, api_name="/compose_colors")
    assert _img(grid).shape[1] > _img(grid).shape[0]  # two samples side by side
    assert "detected in" in md and md.count("\n| ") >= 2


def test_sdxl(client, sdxl_dir):
    status = client.predict("stabilityai/stable-diffusion-xl-base-1.0", api_name="/sdxl_status")
    assert status.startswith(("Disabled here", "Ready"))
    if status.startswith("Disabled here"):  # no weights on disk, no GPU: one plain sentence, no hang
        assert status.endswith(".") and ". " not in status and "weights on disk" in status and "GPU" in status
        _expect_error(client, "model: Disabled here", {"headers": ["prompt", "weight"], "data": [["a dog", 1.0]]},
                      "", 2, 0, 1, "stabilityai/stable-diffusion-xl-base-1.0", api_name="/sdxl_compose")
    path, thread, box = sdxl_dir
    thread.join(300)
    if "error" in box or thread.is_alive():
        pytest.skip(f"tiny SDXL pipeline unavailable: {box.get('error', 'timeout')}")
    assert client.predict(path, api_name="/sdxl_status").startswith("Ready")
    prompts = {"headers": ["prompt", "weight"], "data": [["photo of a dog", 1.0], ["photo, with red hat", -0.5]]}
    gal, md = client.predict(prompts, "", 2, 3, 1, path, api_name="/sdxl_compose")
    assert len(gal) == 1 and os.path.isfile(gal[0]["image"]) and "seed 3" in gal[0]["caption"]
    assert "UNet calls" in md
    heat, md = client.predict(prompts, "", path, api_name="/sdxl_heuristic")
    assert os.path.isfile(heat) and "cos" in md


def test_theory(client):
    img, md = client.predict(-2, 0, 0, 2, "split", 64, api_name="/theory_gauss2d")
    assert os.path.isfile(img) and "exact composed mean (-2.00, 2.00)" in md
    img, md = client.predict(-2, 0, 2, 0, "shared", 64, api_name="/theory_gauss2d")
    assert "exact composed mean (0.00, 0.00)" in md and "hybrid" in md
    img, md = client.predict("eq17", ["0", "2"], 16, api_name="/theory_appg")
    assert os.path.isfile(img) and "eq. 17" in md
    _expect_error(client, "coordinates: choose at least one coordinate", "eq17", [], 16, api_name="/theory_appg")
    _expect_error(client, "expert 1 mean x1: 7 is above the maximum 5", 7, 0, 0, 2, "split", 64,
                  api_name="/theory_gauss2d")


def test_eight_clients_at_once_and_a_ninth_waits(server):
    clients = [Client(server.url, verbose=False) for _ in range(9)]
    jobs = [c.submit(T(THREE), "empty", 2, i, 1, True, api_name="/compose_clevr") for i, c in enumerate(clients)]
    queued = set()
    deadline = time.time() + 240
    while time.time() < deadline and not all(j.done() for j in jobs):
        for i, j in enumerate(jobs):
            st = j.status()
            if st.code == Status.IN_QUEUE and (st.rank or 0) > 0:
                queued.add(i)
        time.sleep(0.05)
    results = [j.result(timeout=60) for j in jobs]
    assert all(os.path.isfile(r[0]) and os.path.isfile(r[1]) for r in results)
    assert all("seed %d," % i in r[2] for i, r in enumerate(results))
    assert queued, "with a concurrency limit of 2, some of 9 simultaneous requests must wait in the queue"
    assert server.alive()
