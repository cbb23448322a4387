"""The real app (`python app.py` in a subprocess), driven endpoint by endpoint with gradio_client.

Random-weight checkpoints (the `tiny` training preset's size) stand in for the trained ones: the
images are noise, but every path — loading, composing, sampling, detection, drawing, validation,
the queue — is the real one. One checkpoint is corrupt on purpose.
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

ENDPOINTS = {"/compose_clevr", "/contribution_map", "/add_object", "/random_objects", "/remove_object",
             "/clear_objects", "/redraw_scene", "/color_preview", "/compose_colors", "/sdxl_status",
             "/sdxl_heuristic", "/sdxl_compose", "/theory_gauss2d", "/theory_appg"}


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
    from projcomp import demo

    root = str(tmp_path)
    demo.write_random_zoo(root, roles=("location", "color"))
    os.makedirs(os.path.join(root, "broken"))
    with open(os.path.join(root, "broken", "config.json"), "w") as f:
        f.write("{not json")
    zoo, problems = demo.open_zoo(root)
    assert len(problems) == 1 and "broken" in problems[0]
    st = demo.zoo_status(zoo)
    assert st["roles"]["empty"] is None and st["roles"]["clutter"] is None and st["roles"]["location"]
    assert st["backgrounds"] == {"empty": False, "bayes": True, "clutter": False}
    with pytest.raises(demo.DemoError, match="empty"):
        demo.clevr_compose(zoo, [[0.5, 0.5]], [1.0], "empty", 1, 0, 1, True)
    res = demo.clevr_compose(zoo, [[0.5, 0.5]], [1.0], "bayes", 1, 0, 1, True)
    assert res.settings == ("B",)  # the counterpart (A) is dropped, not a crash


def test_every_endpoint_is_exposed(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert ENDPOINTS <= set(api["named_endpoints"]), set(api["named_endpoints"])


def test_compose_clevr_side_by_side_same_seeds(client):
    left, right, md = client.predict(T(THREE), "empty", 2, 5, 2, True, api_name="/compose_clevr")
    assert left["label"].startswith("A: empty") and right["label"].startswith("B: unconditional")
    a, b = _img(left["value"]), _img(right["value"])
    assert a.shape == b.shape and a.shape[0] >= 128 and a.shape[1] > a.shape[0]  # two tiles side by side
    assert not np.array_equal(a, b)  # different backgrounds, different images
    assert "places hit" in md and "/ 6**" in md  # 3 objects x 2 samples per side
    assert "seeds 5–6" in md
    # Same request, same pixels (one generator per seed); another seed, other pixels.
    left2, _, _ = client.predict(T(THREE), "empty", 2, 5, 2, True, api_name="/compose_clevr")
    assert np.array_equal(a, _img(left2["value"]))
    left3, _, _ = client.predict(T(THREE), "empty", 2, 9, 2, True, api_name="/compose_clevr")
    assert not np.array_equal(a, _img(left3["value"]))


def test_bayes_and_zero_objects(client):
    left, right, md = client.predict(T(THREE[:1]), "bayes", 1, 0, 1, False, api_name="/compose_clevr")
    assert left["label"].startswith("B:") and right["label"].startswith("A:")
    left, right, md = client.predict(T([]), "empty", 1, 0, 1, True, api_name="/compose_clevr")
    assert "No objects" in md and os.path.isfile(left["value"])


def test_object_editing(client):
    rows, scene = client.predict(0.25, 0.5, -1.0, T(THREE), api_name="/add_object")
    assert rows["data"][-1] == [0.25, 0.5, -1.0] and len(rows["data"]) == 4
    assert _img(scene).shape == (256, 256, 3)
    rows, _ = client.predict(2, T(rows["data"]), api_name="/remove_object")
    assert [r[:2] for r in rows["data"]] == [[0.3, 0.55], [0.7, 0.7], [0.25, 0.5]]
    rows, _ = client.predict(0, T(rows["data"]), api_name="/remove_object")  # 0 = the last one
    assert len(rows["data"]) == 2
    rows, scene = client.predict(5, 3, T([]), api_name="/random_objects")
    xy = np.array([r[:2] for r in rows["data"]])
    assert xy.shape == (5, 2) and (xy >= 0).all() and (xy <= 1).all()
    assert client.predict(5, 3, T([]), api_name="/random_objects")[0]["data"] == rows["data"]  # seeded
    cleared, _ = client.predict(api_name="/clear_objects")
    assert cleared["data"] in ([], [[]], None) or all(all(c in (None, "") for c in r) for r in cleared["data"])
    with_marks = _img(client.predict(T(THREE), api_name="/redraw_scene"))
    empty = _img(client.predict(T([]), api_name="/redraw_scene"))
    assert with_marks.shape == empty.shape and not np.array_equal(with_marks, empty)
    ten = [[0.05 + 0.09 * i, 0.5, 1.0] for i in range(10)]
    _expect_error(client, "at most 10", 0.5, 0.5, 1.0, T(ten), api_name="/add_object")
    _expect_error(client, "outside the image", 1.5, 0.5, 1.0, T([]), api_name="/add_object")


def test_bad_inputs_give_messages_and_the_app_keeps_serving(server, client):
    eleven = [[0.05 + 0.08 * i, 0.5, 1.0] for i in range(11)]
    _expect_error(client, "at most 10", T(eleven), "empty", 2, 0, 1, True, api_name="/compose_clevr")
    _expect_error(client, "not a finite number", T([[0.3, 0.5, "nan"]]), "empty", 2, 0, 1, True, api_name="/compose_clevr")
    _expect_error(client, "not a number", T([[0.3, "left", 1]]), "empty", 2, 0, 1, True, api_name="/compose_clevr")
    _expect_error(client, "less than minimum", T(THREE), "empty", 0, 0, 1, True, api_name="/compose_clevr")
    _expect_error(client, "greater than maximum", T(THREE), "empty", 10000, 0, 1, True, api_name="/compose_clevr")
    _expect_error(client, "greater than maximum", T(THREE), "empty", 2, 0, 9, True, api_name="/compose_clevr")
    _expect_error(client, "weight", T([[0.3, 0.5, 1e6]]), "empty", 2, 0, 1, True, api_name="/compose_clevr")
    _expect_error(client, "prompts: the list is empty", {"headers": ["prompt", "weight"], "data": [["", 1.0]]}, "", 2, 0, 1,
                  "stabilityai/stable-diffusion-xl-base-1.0", api_name="/sdxl_compose")
    _expect_error(client, "not in the list of choices", {"headers": ["prompt", "weight"], "data": [["a dog", 1.0]]}, "", 2, 0, 1,
                  "evil/model", api_name="/sdxl_compose")
    # The corrupt checkpoint (clevr-clutter-16/model.safetensors): a message naming the file.
    _expect_error(client, "clevr-clutter-16", T(THREE), "clutter", 2, 0, 1, True, api_name="/compose_clevr")
    _expect_error(client, "safetensors", T(THREE), "clutter", 2, 0, 1, True, api_name="/compose_clevr")
    _expect_error(client, "at least two colours", ["red"], 1.0, 2, 0, 1, True, api_name="/compose_colors")
    _expect_error(client, "place at least one object", T([]), 1.0, 0, api_name="/contribution_map")
    assert server.alive()
    left, right, md = client.predict(T(THREE), "empty", 1, 0, 1, True, api_name="/compose_clevr")
    assert os.path.isfile(left["value"]) and os.path.isfile(right["value"])


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
    assert status.startswith(("⛔", "✅"))
    if status.startswith("⛔"):  # no weights on disk, no GPU: said plainly, no hang
        gal, md = client.predict({"headers": ["prompt", "weight"], "data": [["a dog", 1.0], ["a hat", 1.0]]}, "", 2, 0, 1,
                                 "stabilityai/stable-diffusion-xl-base-1.0", api_name="/sdxl_compose")
        assert gal == [] and "not on disk" in md
    path, thread, box = sdxl_dir
    thread.join(300)
    if "error" in box or thread.is_alive():
        pytest.skip(f"tiny SDXL pipeline unavailable: {box.get('error', 'timeout')}")
    assert client.predict(path, api_name="/sdxl_status").startswith("✅")
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
    _expect_error(client, "at least one coordinate", "eq17", [], 16, api_name="/theory_appg")


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
    assert all(os.path.isfile(r[0]["value"]) and os.path.isfile(r[1]["value"]) for r in results)
    assert all("seeds %d–%d" % (i, i) in r[2] for i, r in enumerate(results))
    assert queued, "with a concurrency limit of 2, some of 9 simultaneous requests must wait in the queue"
    assert server.alive()
