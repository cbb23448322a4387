"""Projective composition of diffusion models — the interactive app (Bradley et al., ICML 2025).

    python app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_PORT / GRADIO_SERVER_NAME respected)

UI only: `create_app(zoo)` builds one tab per function below; every image, table and figure comes
from `projcomp.tabs` (clevr, colours, sdxl, theory, common), which never imports gradio. Nothing
is loaded at import time: `main()` finds the checkpoints ($PROJCOMP_CHECKPOINTS, a folder of
checkpoint folders or a Hub repo id; default `checkpoints/`), builds the app, warms it up in a
thread and serves it. On a ZeroGPU Space the sampling functions run under `spaces.GPU`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
import threading
import traceback

try:  # ZeroGPU: `spaces` must be imported before anything touches CUDA.
    import spaces  # type: ignore
except ImportError:
    spaces = None

import gradio as gr
import matplotlib

matplotlib.use("Agg")
# Import pyplot once, now: Gradio switches the matplotlib backend around every event, and a
# first import of pyplot inside one event races with that switch in another (half-imported module).
import matplotlib.pyplot  # noqa: E402,F401
import torch  # noqa: E402

from projcomp.tabs import clevr as tc  # noqa: E402
from projcomp.tabs import colours as tcol  # noqa: E402
from projcomp.tabs import common as cm  # noqa: E402
from projcomp.tabs import sdxl as tsd  # noqa: E402
from projcomp.tabs import theory as tth  # noqa: E402


@dataclasses.dataclass
class Config:
    """Serving settings, read from the environment when the app is built (not at import)."""
    concurrency: int        # sampling jobs at once (PROJCOMP_CONCURRENCY)
    queue_size: int         # waiting requests beyond that (PROJCOMP_QUEUE_SIZE)
    threads: int            # torch threads per job (PROJCOMP_THREADS; default cores / concurrency)
    device: str
    parallel_sides: bool    # sample the two sides of the comparison in two threads
    bf16_fast: bool
    sdxl_models: list

    @classmethod
    def from_env(cls) -> "Config":
        from projcomp.sampling import bf16_is_fast
        conc = max(1, int(os.environ.get("PROJCOMP_CONCURRENCY", "2")))
        threads = int(os.environ.get("PROJCOMP_THREADS", "0")) or max(1, (os.cpu_count() or 1) // conc)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(concurrency=conc, queue_size=max(1, int(os.environ.get("PROJCOMP_QUEUE_SIZE", "16"))),
                   threads=threads, device=device,
                   parallel_sides=device == "cpu" and threads == 1 and (os.cpu_count() or 1) >= 2,
                   bf16_fast=bf16_is_fast(device),
                   sdxl_models=tsd.models(os.environ.get("PROJCOMP_SDXL_MODELS", "")))

    @property
    def bf16_label(self) -> str:
        return "bfloat16" + (" (faster here)" if self.bf16_fast else " (slower on this CPU)")


# ---------------------------------------------------------------------------------------------
# Errors: a visitor's mistake is one message naming the field; anything else is logged.


def _user_message(e: BaseException) -> gr.Error:
    # An expected project error: the visitor gets the message, the server log no traceback.
    return gr.Error(str(e), title="Cannot run this", print_exception=False)


def _internal(e: BaseException) -> gr.Error:
    """A bug: logged once here, with its traceback (so Gradio need not print another)."""
    print(f"[app] internal error: {type(e).__name__}: {e}", file=sys.stderr)
    traceback.print_exc()
    return gr.Error(f"Internal error ({type(e).__name__}); it is logged on the server.", title="Something went wrong",
                    print_exception=False)


def _final(stream, *keep: int) -> tuple:
    """The API form of a streaming handler: run it to the end and return the outputs at positions
    `keep` of the last tuple it yields (the finished result, not the progress updates)."""
    out = None
    for out in stream:
        pass
    return tuple(out[i] for i in keep)


def guard(fn):
    """Run `fn`; project errors become one message (gr.Error), others are logged as internal errors.
    Works for plain functions and generators (streamed outputs)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as e:  # noqa: BLE001
                raise (_user_message(e) if cm.is_user_error(e) else _internal(e)) from None
        return gen

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:  # noqa: BLE001
            raise (_user_message(e) if cm.is_user_error(e) else _internal(e)) from None
    return wrapper


def gpu(duration):
    """`spaces.GPU(duration=...)` on a ZeroGPU Space; a no-op elsewhere."""
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


def Slider(*args, **kwargs) -> gr.Slider:  # noqa: N802 - used like the component it returns
    """A gr.Slider whose value the handler checks (out-of-range API values get a message naming the
    field, not Gradio's anonymous 'Value 0 is less than minimum value 1'). Not a subclass: Gradio
    writes a .pyi stub beside the module of every Component subclass."""
    s = gr.Slider(*args, **kwargs)
    s.preprocess = lambda payload: payload
    return s


# ---------------------------------------------------------------------------------------------
# Header.

INTRO = """## When does composing diffusion models work?
Each small model here has only ever seen **one object** in a scene. Asked together, do they paint
all the objects at once? **Left:** their combination measured against an *empty scene* —
the objects appear. **Right:** the same seeds against the usual *"any one object"* model — they
mostly don't. Click the scene to place objects, then **Compose**, or try an example."""

FORMULA = """Every model is a denoiser D(x, σ). The composition (Def 5.1 of *Mechanisms of Projective
Composition of Diffusion Models*, Bradley et al., ICML 2025) is

  **D(x, σ) = D_b(x, σ) + Σᵢ wᵢ (Dᵢ(x, σ) − D_b(x, σ))**

with one term per object (D_i = "an object at place i", weight w_i, negative = NOT) and a
background D_b. When the conditionals are *factorized* against the background (each changes only
its own pixels, Def 5.2) the composition has every object at once (Thm 5.3): for CLEVR that
background is the **empty scene**, not the unconditional model (Bayes composition, §3)."""

CSS = """
.pc-header h2 { margin: 0 0 0.2em 0; }
.pc-header p { margin: 0.1em 0; }
.pc-note { font-size: 0.9em; opacity: 0.9; }
#scene img { cursor: crosshair; }
#progress { min-height: 1.6em; }
"""


def status_markdown(zoo, status: dict, problems) -> str:
    r = status["roles"]
    have = ", ".join(f"{role}: `{n}`" for role, n in r.items() if n) or "none"
    if status["empty_label"] and not r["empty"]:
        have += f" (empty scene: the 'empty' label of `{r['location']}`)"
    lines = [f"Checkpoints from `{os.path.basename(os.path.normpath(zoo.root))}` — {have}."]
    others = [x for x in zoo.resolutions() if x != zoo.preferred_resolution()]
    if others:
        lines.append("Also on disk at " + ", ".join(f"{x}×{x}" for x in others) + ": restart with "
                     + " or ".join(f"`PROJCOMP_RESOLUTION={x}`" for x in others) + " to use them.")
    missing = [role for role, n in r.items() if not n and not (role == "empty" and status["empty_label"])]
    if missing:
        lines.append(f"Missing role(s): {', '.join(missing)} — the options that need them are disabled.")
    if any(cfg.get("random_weights") for cfg in zoo.entries.values()):
        lines.append("These are **random-weight** test checkpoints: images are noise; the UI works end to end.")
    lines += [str(p) for p in problems]
    return "  \n".join(lines)


# ---------------------------------------------------------------------------------------------
# CLEVR objects tab.


def build_clevr_tab(zoo, cfg: Config, status: dict) -> dict:
    colors = status["location_colors"]
    bg_available = [(label, key) for label, key in tc.BG_CHOICES if status["backgrounds"][key]]
    default_objs = [tc.Obj(x, y) for x, y in tc.DEFAULT_OBJECTS]
    framing = status["framing"]  # the canvas shows the floor as the location net's images frame it

    def draw(objs, sel=None):
        return tc.draw_scene(objs, sel, framing=framing)

    def parse(rows):
        return tc.parse_objects(rows, colors)

    def table(objs):
        return tc.to_table(objs, colors)

    def color_choice(objs, sel):
        if not colors:
            return gr.skip()
        if sel is None or not 0 <= sel < len(objs):
            return gr.Dropdown(value=tc.ANY, interactive=False)
        return gr.Dropdown(value=objs[sel].color or tc.ANY, interactive=True)

    # The edits below read the objects from `edited` (a gr.State: kept on the server, read when the
    # event runs) instead of the table's value in the browser (read when the event is triggered), and
    # run one at a time, in order. So every click counts: a click while the previous one is being
    # drawn is queued (trigger_mode="multiple") and sees its result -- the 11th one gets the message.
    def edit_result(objs, sel, note):
        """The outputs of an edit: table, scene, selection, note, colour control, `edited`."""
        return table(objs), draw(objs, sel), sel, note, color_choice(objs, sel), table(objs)

    @guard
    def on_click(rows, sel, evt: gr.SelectData):
        if evt is None or evt.index is None:
            return (gr.skip(),) * 6
        px, py = evt.index[:2]
        return edit_result(*tc.click(parse(rows), sel, px / tc.DISPLAY, py / tc.DISPLAY))

    @guard
    def on_delete(rows, sel):
        return edit_result(*tc.delete(parse(rows), sel))

    @guard
    def on_deselect(rows):
        objs = parse(rows)
        return draw(objs, None), None, tc.selection_note(objs, None), color_choice(objs, None)

    @guard
    def on_clear():
        return edit_result([], None, "All objects removed.")

    @guard
    def on_random(k, lseed):
        objs = tc.random_objects(k, lseed, framing)
        return edit_result(objs, None, f"{len(objs)} random places (layout seed {lseed}).")

    def on_table_edit(rows, sel):
        """Redraw after a table edit (and keep the edit for the next click). An invalid cell keeps the
        old scene: Compose (or a click) then names the field, once (a message here would say it twice)."""
        try:
            objs = parse(rows)
        except Exception:  # noqa: BLE001
            return gr.skip(), gr.skip(), rows
        sel = sel if sel is not None and 0 <= sel < len(objs) else None
        return draw(objs, sel), sel, rows

    @guard
    def on_color(rows, sel, color):
        objs = tc.set_color(parse(rows), sel, color, colors)
        return table(objs), draw(objs, sel), tc.selection_note(objs, sel), table(objs)

    def _duration(rows, background, steps, seed, samples, *a, **k):
        try:
            return cm.gpu_seconds(int(steps), 2 * (len(parse(rows)) + 1), int(samples), per_row_call=0.003, base=5)
        except Exception:  # noqa: BLE001
            return 60

    @gpu(_duration)
    @guard
    def compose_live(rows, background, steps, seed, samples, bf16, upsampling, markers, solver="heun", guidance=1.0):
        """Stream (left, right, progress, summary) while sampling: the x0 predictions forming."""
        objs = parse(rows)
        background, steps, seed, samples, upsampling, markers = tc.check_request(
            zoo, background, steps, seed, samples, upsampling, markers)
        guidance = tc.check_guidance(guidance)
        settings = None
        for kind, text, data in tc.compose_stream(zoo, objs, background, steps, seed, samples, bool(bf16), upsampling,
                                                  markers, parallel=cfg.parallel_sides, solver=solver,
                                                  color_guidance=guidance):
            if kind == "progress":
                order = cm.BACKGROUNDS[background]
                imgs = [data.get(s, gr.skip()) if data else gr.skip() for s in order]
                yield imgs[0], imgs[1], text, gr.skip()
            else:
                res = data
                settings = res.settings
                right = res.panels[settings[1]] if len(settings) > 1 else None
                yield res.panels[settings[0]], right, text, tc.headline(res, objs, steps, bool(bf16), solver)

    @guard
    def compose_api(rows, background, steps, seed, samples, bf16):
        """(left image, right image, summary markdown): the composition and its counterpart, same seeds."""
        return _final(compose_live.__wrapped__(rows, background, steps, seed, samples, bf16, "sharp", "outline"), 0, 1, 3)

    @guard
    def contribution_map(rows, sigma, seed):
        objs = parse(rows)
        img, locality = tc.contribution_maps(zoo, objs, sigma, seed)
        parts = [f"{s}: {100 * sum(v) / len(v):.0f}%" for s, v in locality.items()]
        return img, (f"σ = {float(sigma):g}. Share of each term's |w_i (D_i − D_b)| within 0.15 image widths of its "
                     f"own object (mean over objects): {', '.join(parts)}.")

    @guard
    def add_object(x, y, w, rows):
        """API: append an object at (x, y) in [0, 1] with weight w (what a click on the floor does)."""
        objs = parse(rows)
        if len(objs) >= cm.MAX_OBJECTS:
            raise cm.InputError("objects", f"at most {cm.MAX_OBJECTS} are allowed; delete one first")
        objs.append(tc.Obj(cm.number(x, "x", 0, 1), cm.number(y, "y", 0, 1), cm.weight(w, "weight")))
        return table(objs), draw(objs)

    @guard
    def redraw_scene(rows):
        return draw(parse(rows))

    with gr.Tab("CLEVR objects", id="clevr"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=300):
                scene = gr.Image(value=draw(default_objs), label="The scene: click to place objects",
                                 interactive=False, format="png", height=268, elem_id="scene", buttons=[],
                                 show_label=False)
                note = gr.Markdown(tc.selection_note(default_objs, None), elem_id="scene-note", elem_classes="pc-note")
                with gr.Row():
                    run_btn = gr.Button("Compose", variant="primary", elem_id="run", interactive=bool(bg_available),
                                        scale=2)
                    delete_btn = gr.Button("Delete selected", size="sm", elem_id="delete", scale=1)
                    deselect_btn = gr.Button("Deselect", size="sm", elem_id="deselect", scale=1)
                    clear_btn = gr.Button("Clear", size="sm", elem_id="clear", scale=1)
                progress = gr.Markdown("", elem_id="progress")
            with gr.Column(scale=3, min_width=260):
                left = gr.Image(label="left: the chosen background", show_label=False, format="png", interactive=False,
                                elem_id="left", buttons=["download"], height=400)
            with gr.Column(scale=3, min_width=260):
                right = gr.Image(label="right: the counterpart, same seeds", show_label=False, format="png",
                                 interactive=False, elem_id="right", buttons=["download"], height=400)
        hits = gr.Markdown("Press **Compose**: the left panel uses the chosen background, the right one the other "
                           "side of the comparison with the same seeds.", elem_id="hits")
        exs = tc.examples(status)
        with gr.Row(elem_id="clevr-examples"):
            gr.Markdown("**Examples** (each sets objects, background, seed and samples, then composes):",
                        elem_classes="pc-note")
            ex_btns = [gr.Button(ex["label"], size="sm", elem_id=f"ex-clevr-{i}") for i, ex in enumerate(exs)]
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=300):
                objects = gr.Dataframe(value=table(default_objs), headers=tc.headers(colors),
                                       datatype=["number", "number", "number"] + (["str"] if colors else []),
                                       type="array", column_count=len(tc.headers(colors)), interactive=True,
                                       label=f"Objects (x, y in [0, 1]; weight w_i, negative = NOT; max {cm.MAX_OBJECTS}"
                                             + ("; colour: any or one of " + ", ".join(colors) if colors else "") + ")",
                                       elem_id="objects", max_height=260)
                obj_color = gr.Dropdown([tc.ANY, *colors], value=tc.ANY, label="colour of the selected object",
                                        interactive=False, visible=bool(colors), elem_id="obj-color")
                with gr.Row():
                    k = Slider(1, cm.MAX_OBJECTS, value=4, step=1, label="k", min_width=90, scale=2)
                    loc_seed = gr.Number(value=0, precision=0, label="layout seed", min_width=80, scale=1)
                    rand_btn = gr.Button("k random places", size="sm", scale=2)
            with gr.Column(scale=5, min_width=300):
                background = gr.Radio(bg_available, value=bg_available[0][1] if bg_available else None,
                                      label="Background b", elem_id="background")
                if len(bg_available) < len(tc.BG_CHOICES):
                    gr.Markdown("Unavailable (no checkpoint): " + ", ".join(
                        label for label, key in tc.BG_CHOICES if not status["backgrounds"][key]), elem_classes="pc-note")
                with gr.Row():
                    steps = Slider(1, cm.MAX_STEPS, value=16, step=1, label="steps", min_width=120, elem_id="steps")
                    samples = Slider(1, cm.MAX_SAMPLES, value=4, step=1, label="samples", min_width=120, elem_id="samples")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, label="seed", min_width=80, elem_id="seed")
                    bf16 = gr.Checkbox(value=cfg.bf16_fast, label=cfg.bf16_label, min_width=80)
                solver = gr.Radio([(label, key) for key, label in cm.SOLVER_CHOICES.items()], value="heun",
                                  label="sampler (ODE solver)", elem_id="solver")
                guidance = Slider(1, cm.MAX_GUIDANCE, value=tc.DEFAULT_GUIDANCE, step=0.5, visible=bool(colors),
                                  label="colour guidance g (coloured objects: D_xy + g (D_xyc − D_xy); 1 = off)",
                                  elem_id="color-guidance")
                with gr.Row():
                    upsampling = gr.Radio([(v, key) for key, v in cm.UPSAMPLING.items()], value="sharp",
                                          label="upsampling of the results", elem_id="upsampling")
                    markers = gr.Radio([(v, key) for key, v in tc.MARKERS.items()], value="outline",
                                       label="markers on the results", elem_id="markers")
        with gr.Accordion("Where does each concept act? Contribution maps |w_i (D_i − D_b)|", open=False):
            gr.Markdown("Each term's push on the denoiser at one noise level σ, evaluated at the empty scene + σ·noise. "
                        "Under the empty background a term only acts near its own object (factorized "
                        "conditionals, Def 5.2); under the Bayes background it also has to erase the object "
                        "p_u would have put anywhere.", elem_classes="pc-note")
            with gr.Row():
                sigma = Slider(0.05, 20, value=1.0, step=0.05, label="noise level σ", scale=4)
                contrib_btn = gr.Button("Show maps", scale=1)
            contrib = gr.Image(label="contribution maps (one colour scale)", format="png", interactive=False)
            contrib_md = gr.Markdown()
        selected = gr.State(None)
        edited = gr.State(table(default_objs))  # the objects table as the edits left it (see edit_result)

        edit_out = [objects, scene, selected, note, obj_color, edited]
        # One edit at a time, in order (cheap: a parse and a 256-px drawing); no spinners over the scene.
        ed = dict(concurrency_id="scene-edit", concurrency_limit=1, show_progress="hidden")
        scene.select(on_click, [edited, selected], edit_out, api_visibility="private", trigger_mode="multiple", **ed)
        delete_btn.click(on_delete, [edited, selected], edit_out, api_visibility="private", **ed)
        deselect_btn.click(on_deselect, [edited], [scene, selected, note, obj_color], api_visibility="private", **ed)
        clear_btn.click(on_clear, None, edit_out, api_name="clear_objects", **ed)
        rand_btn.click(on_random, [k, loc_seed], edit_out, api_name="random_objects", **ed)
        objects.input(on_table_edit, [objects, selected], [scene, selected, edited], api_visibility="private",
                      trigger_mode="always_last", **ed)
        obj_color.input(on_color, [edited, selected, obj_color], [objects, scene, note, edited],
                        api_visibility="private", **ed)
        live_in = [objects, background, steps, seed, samples, bf16, upsampling, markers, solver, guidance]
        live_out = [left, right, progress, hits]
        run_btn.click(compose_live, live_in, live_out, api_name="compose_clevr_live", concurrency_id="sampler",
                      concurrency_limit=cfg.concurrency, show_progress="hidden")
        for ex, btn in zip(exs, ex_btns):
            def load(ex=ex):
                return (*edit_result(list(ex["objects"]), None, tc.example_note(ex)),
                        ex["background"], ex["steps"], ex["seed"], ex["samples"])
            btn.click(load, None, edit_out + [background, steps, seed, samples], api_visibility="private",
                      **ed).then(
                compose_live, live_in, live_out, api_visibility="private", concurrency_id="sampler",
                concurrency_limit=cfg.concurrency, show_progress="hidden")
        contrib_btn.click(contribution_map, [objects, sigma, seed], [contrib, contrib_md], api_name="contribution_map",
                          concurrency_id="sampler", concurrency_limit=cfg.concurrency)
        sigma.release(contribution_map, [objects, sigma, seed], [contrib, contrib_md], api_visibility="private",
                      concurrency_id="sampler", concurrency_limit=cfg.concurrency)
        # API-only endpoints: the composition in one call; an object placed where a click would put it.
        api_btn = gr.Button(visible=False)
        api_btn.click(compose_api, [objects, background, steps, seed, samples, bf16], [left, right, hits],
                      api_name="compose_clevr", concurrency_id="sampler", concurrency_limit=cfg.concurrency)
        ax, ay, aw = gr.Number(visible=False), gr.Number(visible=False), gr.Number(visible=False)
        gr.Button(visible=False).click(add_object, [ax, ay, aw, objects], [objects, scene], api_name="add_object",
                                       concurrency_limit=None)
        gr.Button(visible=False).click(redraw_scene, [objects], [scene], api_name="redraw_scene",
                                       concurrency_limit=None)
    return {"objects": objects, "scene": scene}


# ---------------------------------------------------------------------------------------------
# Colours tab (Fig 5). Self-contained: its statistics may be reworked in projcomp/tabs/colours.py.


def build_colours_tab(zoo, cfg: Config, app: gr.Blocks) -> None:
    classes = tcol.color_classes(zoo)
    res = tcol.resolution(zoo)
    can_sample = tcol.has_color_net(zoo)
    bg = tcol.background(zoo)

    @guard
    def preview(colors):
        hist, heat, md = tcol.preview(colors, classes, res, bg)
        return cm.figure_to_image(hist), (cm.figure_to_image(heat) if heat is not None else None), md

    def _duration(colors, weight, steps, seed, samples, *a, **k):
        try:
            return cm.gpu_seconds(int(steps), len(colors or []) + 1, int(samples), per_row_call=0.003, base=5)
        except Exception:  # noqa: BLE001
            return 60

    @gpu(_duration)
    @guard
    def compose_live(colors, weight, steps, seed, samples, bf16, solver="heun"):
        colors, w, steps, seed, samples = tcol.check_request(zoo, colors, weight, steps, seed, samples)
        for kind, text, data in tcol.compose_stream(zoo, colors, w, steps, seed, samples, bool(bf16), solver=solver):
            if kind == "progress":
                yield (data if data is not None else gr.skip()), text, gr.skip()
            else:
                grid, found, seeds = data
                yield grid, text, tcol.summary(colors, found, seeds)

    @guard
    def compose_api(colors, weight, steps, seed, samples, bf16):
        return _final(compose_live.__wrapped__(colors, weight, steps, seed, samples, bf16), 0, 2)

    with gr.Tab("Colours (Fig 5)", id="colours"):
        gr.Markdown("Compose colour-conditioned one-object models over their unconditional term. The "
                    "heuristic below (Lemma 8.1) predicts from rendered data, *before* sampling, whether "
                    "the colours are factorized — they mostly share channels, so expect hybrids or failures.",
                    elem_classes="pc-note")
        with gr.Row(equal_height=False):
            with gr.Column(scale=4):
                colors = gr.CheckboxGroup(classes, value=[c for c in ("yellow", "blue") if c in classes],
                                          label="Colours (2 or more)", elem_id="colors")
                cweight = Slider(-2, 3, value=1.0, step=0.1, label="weight of every colour term")
                with gr.Row():
                    csteps = Slider(1, cm.MAX_STEPS, value=16, step=1, label="steps")
                    csamples = Slider(1, cm.MAX_SAMPLES, value=4, step=1, label="samples")
                with gr.Row():
                    cseed = gr.Number(value=0, precision=0, label="seed")
                    cbf16 = gr.Checkbox(value=cfg.bf16_fast, label=cfg.bf16_label)
                csolver = gr.Radio([(label, key) for key, label in cm.SOLVER_CHOICES.items()], value="heun",
                                   label="sampler (ODE solver)", elem_id="csolver")
                crun = gr.Button("Compose colours", variant="primary", interactive=can_sample, elem_id="crun")
                if not can_sample:
                    gr.Markdown("No colour checkpoint here, so sampling is off; the heuristic still works.")
                cprogress = gr.Markdown("", elem_id="cprogress")
                with gr.Row():
                    gr.Markdown("**Examples:**", elem_classes="pc-note")
                    ex_btns = [gr.Button(ex["label"], size="sm", elem_id=f"ex-colours-{i}", interactive=can_sample)
                               for i, ex in enumerate(tcol.EXAMPLES)]
            with gr.Column(scale=6):
                cout = gr.Image(label="composed samples", show_label=False, format="png", interactive=False,
                                elem_id="cout")
                cmd = gr.Markdown(elem_id="cmd")
        with gr.Row(equal_height=False):
            with gr.Column(scale=6):
                gr.Markdown("**Fig 5:** per-channel histograms of object pixels (chosen colours bold)")
                hist = gr.Image(show_label=False, format="png", interactive=False, elem_id="hist")
            with gr.Column(scale=4):
                verdict_md = gr.Markdown()
                heat = gr.Image(show_label=False, format="png", interactive=False, height=300, elem_id="heat")
        colors.change(preview, [colors], [hist, heat, verdict_md], api_name="color_preview", concurrency_limit=None)
        cin = [colors, cweight, csteps, cseed, csamples, cbf16]
        crun.click(compose_live, cin + [csolver], [cout, cprogress, cmd], api_name="compose_colors_live", concurrency_id="sampler",
                   concurrency_limit=cfg.concurrency, show_progress="hidden")
        api_btn = gr.Button(visible=False)
        api_btn.click(compose_api, cin, [cout, cmd], api_name="compose_colors", concurrency_id="sampler",
                      concurrency_limit=cfg.concurrency)
        for ex, btn in zip(tcol.EXAMPLES, ex_btns):
            def load(ex=ex):
                return ex["colors"], ex["weight"], ex["steps"], ex["seed"], ex["samples"], \
                    f"Example **{ex['label']}** loaded (seed {ex['seed']}, {ex['samples']} samples) — composing…"
            btn.click(load, None, [colors, cweight, csteps, cseed, csamples, cmd], api_visibility="private",
                      concurrency_limit=None).then(
                compose_live, cin + [csolver], [cout, cprogress, cmd], api_visibility="private", concurrency_id="sampler",
                concurrency_limit=cfg.concurrency, show_progress="hidden")
        app.load(preview, [colors], [hist, heat, verdict_md], api_visibility="private", concurrency_limit=None)


# ---------------------------------------------------------------------------------------------
# SDXL prompts tab.


def build_sdxl_tab(zoo, cfg: Config) -> None:
    allowed = cfg.sdxl_models
    runnable = [m for m in allowed if tsd.status(m, allowed)[0]]
    default = runnable[0] if runnable else allowed[0]

    def state(model):
        ok, msg = tsd.status(model, allowed)
        return msg, ok

    def on_model(model):
        msg, ok = state(model)
        return msg, gr.Button(interactive=ok), gr.Button(interactive=ok)

    def sdxl_status(model):
        return state(model)[0]

    @guard
    def heuristic(rows, background, model):
        fig, md = tsd.heuristic(rows, background, model, allowed)
        return cm.figure_to_image(fig), md

    def _duration(rows, background, steps, seed, samples, model, *a, **k):
        try:
            return cm.gpu_seconds(int(steps), len(tsd.parse_prompts(rows)[0]), int(samples), per_row_call=0.05, base=20)
        except Exception:  # noqa: BLE001
            return 120

    @gpu(_duration)
    @guard
    def compose_live(rows, background, steps, seed, samples, model):
        import time
        prompts, ws, background, steps, seed, samples, model = tsd.check_request(
            rows, background, steps, seed, samples, model, allowed)
        seeds = [seed + i for i in range(samples)]
        t0 = time.perf_counter()

        def job(cb):
            return tsd.compose(prompts, ws, background, steps, seeds, model,
                               callback=lambda i, n, _lat: cb({"i": i - 1, "n": n}))

        yield gr.skip(), "Loading the pipeline…", gr.skip()
        for kind, data in cm.stream_jobs({"s": job}, parallel=False):
            if kind == "progress":
                yield gr.skip(), cm.progress_text(data, {"s": "SDXL"}, t0), gr.skip()
            else:
                images, dt, calls = data["s"]
                terms = " + ".join(f"{w:g}·[{p}]" for p, w in zip(prompts, ws))
                yield ([(im, f"seed {s}") for im, s in zip(images, seeds)], f"Done in {dt:.1f} s.",
                       f"Composed {terms} over background {background!r} ({calls} UNet calls).")

    @guard
    def compose_api(rows, background, steps, seed, samples, model):
        return _final(compose_live.__wrapped__(rows, background, steps, seed, samples, model), 0, 2)

    msg0, ok0 = state(default)
    with gr.Tab("SDXL prompts", id="sdxl"):
        gr.Markdown("Compose prompts with SDXL: ε_b + Σ w_i (ε_i − ε_b). The background prompt is the paper's "
                    "\"most critical choice\" (empty = unconditional).", elem_classes="pc-note")
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                model = gr.Dropdown(allowed, value=default, label="Model (allow-list)", elem_id="sdxl-model")
                model_md = gr.Markdown(msg0, elem_id="sdxl-status")
                prompts = gr.Dataframe(value=tsd.DEFAULT_PROMPTS, headers=["prompt", "weight"],
                                       datatype=["str", "number"], type="array", column_count=2, interactive=True,
                                       label="Prompts and weights (negative = NOT)", elem_id="prompts")
                sbg = gr.Textbox(value="", label="Background prompt (empty = unconditional)")
                with gr.Row():
                    ssteps = Slider(1, 100, value=30, step=1, label="steps", elem_id="sdxl-steps")
                    ssamples = Slider(1, 4, value=1, step=1, label="samples")
                    sseed = gr.Number(value=0, precision=0, label="seed")
                with gr.Row():
                    hbtn = gr.Button("Will it compose? (heuristic)", interactive=ok0, elem_id="sheur")
                    sbtn = gr.Button("Compose", variant="primary", interactive=ok0, elem_id="srun")
                with gr.Row():
                    gr.Markdown("**Examples:**", elem_classes="pc-note")
                    ex_btns = [gr.Button(ex["label"], size="sm", elem_id=f"ex-sdxl-{i}")
                               for i, ex in enumerate(tsd.EXAMPLES)]
            with gr.Column(scale=5):
                sprogress = gr.Markdown("", elem_id="sprogress")
                sgal = gr.Gallery(label="composed images", columns=2, height=360, elem_id="sgal")
                sout_md = gr.Markdown()
                sheat = gr.Image(show_label=False, format="png", interactive=False, height=280)
                sheat_md = gr.Markdown()
        model.change(on_model, [model], [model_md, hbtn, sbtn], api_visibility="private", concurrency_limit=None)
        gr.Button(visible=False).click(sdxl_status, [model], [model_md], api_name="sdxl_status", concurrency_limit=None)
        hbtn.click(heuristic, [prompts, sbg, model], [sheat, sheat_md], api_name="sdxl_heuristic",
                   concurrency_id="sdxl", concurrency_limit=1)
        sin = [prompts, sbg, ssteps, sseed, ssamples, model]
        sbtn.click(compose_live, sin, [sgal, sprogress, sout_md], api_name="sdxl_compose_live", concurrency_id="sdxl",
                   concurrency_limit=1, show_progress="hidden")
        gr.Button(visible=False).click(compose_api, sin, [sgal, sout_md], api_name="sdxl_compose",
                                       concurrency_id="sdxl", concurrency_limit=1)
        for ex, btn in zip(tsd.EXAMPLES, ex_btns):
            def load(model, ex=ex):
                ok = tsd.status(model, allowed)[0]
                note = (f"Example **{ex['label']}** loaded — composing…" if ok else
                        f"Example **{ex['label']}** loaded; composing needs a model that can run here (see above).")
                return {"headers": ["prompt", "weight"], "data": ex["prompts"]}, ex["background"], note

            def run_if_ok(rows, background, steps, seed, samples, model):
                if not tsd.status(model, allowed)[0]:
                    yield gr.skip(), gr.skip(), gr.skip()
                    return
                yield from compose_live(rows, background, steps, seed, samples, model)
            btn.click(load, [model], [prompts, sbg, sout_md], api_visibility="private", concurrency_limit=None).then(
                run_if_ok, sin, [sgal, sprogress, sout_md], api_visibility="private", concurrency_id="sdxl",
                concurrency_limit=1, show_progress="hidden")


# ---------------------------------------------------------------------------------------------
# Theory lab tab.


def build_theory_tab(zoo, cfg: Config) -> None:
    @guard
    def gauss2d(m1x, m1y, m2x, m2y, mode, samples):
        vals, mode, samples = tth.check_gauss2d(m1x, m1y, m2x, m2y, mode, samples)
        fig, num = tth.gauss2d_lab(vals[:2], vals[2:], mode, num_samples=samples)
        return cm.figure_to_image(fig), tth.gauss2d_markdown(num)

    @guard
    def appg(which, coords, samples):
        which, idx, samples = tth.check_appg(which, coords, samples)
        fig, md = tth.appg(which, idx, num_seeds=samples)
        return cm.figure_to_image(fig), md

    with gr.Tab("Theory lab", id="theory"):
        gr.Markdown("Exact scores, no networks: the same operator and sampler as above on distributions "
                    "whose composition is known in closed form.", elem_classes="pc-note")
        with gr.Row():
            gr.Markdown("**Examples:**", elem_classes="pc-note")
            ex_btns = [gr.Button(ex["label"], size="sm", elem_id=f"ex-theory-{i}") for i, ex in enumerate(tth.EXAMPLES)]
        with gr.Row(equal_height=False):
            with gr.Column(scale=4):
                gr.Markdown("**§6.5: 2-D Gaussian experts** over the background N(0, 4I). Expert 1 is narrow in "
                            "x1; expert 2 is narrow in x2 (*split*) or also in x1 (*shared*).")
                mode = gr.Radio(["split", "shared"], value="split", label="experts")
                with gr.Row():
                    m1x = Slider(-5, 5, value=-2, step=0.1, label="expert 1 mean x1")
                    m1y = Slider(-5, 5, value=0, step=0.1, label="expert 1 mean x2")
                with gr.Row():
                    m2x = Slider(-5, 5, value=0, step=0.1, label="expert 2 mean x1")
                    m2y = Slider(-5, 5, value=2, step=0.1, label="expert 2 mean x2")
                tsamples = Slider(16, 1024, value=256, step=16, label="samples")
                tbtn = gr.Button("Compose", variant="primary", elem_id="trun")
            with gr.Column(scale=6):
                tplot = gr.Image(show_label=False, format="png", interactive=False, elem_id="tplot", height=440)
                tmd = gr.Markdown(elem_id="tmd")
        gr.Markdown("**App. G (Fig 12):** eight coordinates; p_i switches coordinate i on. Compose a subset "
                    "over the right background (empty, eq. 17; cluttered, eq. 18) vs Bayes (p_u).")
        with gr.Row(equal_height=False):
            with gr.Column(scale=4):
                which = gr.Radio([("eq. 17: empty background", "eq17"), ("eq. 18: cluttered background", "eq18")],
                                 value="eq17", label="toy")
                coords = gr.CheckboxGroup([str(i) for i in range(8)], value=["0", "2", "4", "6"],
                                          label="coordinates to compose")
                gsamples = Slider(8, 512, value=64, step=8, label="samples")
                gbtn = gr.Button("Compose", variant="primary", elem_id="grun")
            with gr.Column(scale=6):
                gplot = gr.Image(show_label=False, format="png", interactive=False, elem_id="gplot")
                gmd = gr.Markdown(elem_id="gmd")
        tin = [m1x, m1y, m2x, m2y, mode, tsamples]
        kw = dict(concurrency_id="sampler", concurrency_limit=cfg.concurrency)
        tbtn.click(gauss2d, tin, [tplot, tmd], api_name="theory_gauss2d", **kw)
        for s in (m1x, m1y, m2x, m2y):
            s.release(gauss2d, tin, [tplot, tmd], api_visibility="private", **kw)
        mode.input(gauss2d, tin, [tplot, tmd], api_visibility="private", **kw)
        gbtn.click(appg, [which, coords, gsamples], [gplot, gmd], api_name="theory_appg", **kw)
        for ex, btn in zip(tth.EXAMPLES, ex_btns):
            if ex["kind"] == "gauss2d":
                btn.click(lambda ex=ex: (*ex["means"], ex["mode"], ex["samples"]), None, tin, api_visibility="private",
                          concurrency_limit=None).then(gauss2d, tin, [tplot, tmd], api_visibility="private", **kw)
            else:
                gin = [which, coords, gsamples]
                btn.click(lambda ex=ex: (ex["which"], ex["coords"], ex["samples"]), None, gin,
                          api_visibility="private", concurrency_limit=None).then(
                    appg, gin, [gplot, gmd], api_visibility="private", **kw)


# ---------------------------------------------------------------------------------------------
# The app.


def create_app(zoo, problems=(), config: Config | None = None) -> gr.Blocks:
    """The Gradio app over a Zoo of checkpoints (projcomp.experiments.Zoo); `problems` are lines
    to show (folders skipped, ...). Queued; call `.launch(css=CSS, theme=THEME)` to serve."""
    cfg = config or Config.from_env()
    torch.set_num_threads(cfg.threads)  # one job per core: oversubscribed OpenMP threads crawl on a shared CPU
    status = cm.zoo_status(zoo)
    with gr.Blocks(title="Projective composition") as app:
        gr.Markdown(INTRO, elem_classes="pc-header")
        with gr.Accordion("The formula, and what \"background\" means", open=False, elem_id="formula"):
            gr.Markdown(FORMULA)
        gr.Markdown(status_markdown(zoo, status, problems), elem_classes="pc-note", elem_id="status")
        with gr.Tabs():
            build_clevr_tab(zoo, cfg, status)
            build_colours_tab(zoo, cfg, app)
            build_sdxl_tab(zoo, cfg)
            build_theory_tab(zoo, cfg)
    app.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.queue_size)
    app.projcomp_config = cfg
    return app


def warm_up(zoo, cfg: Config) -> None:
    """Load the default composition's nets and run one step, so that the first click is fast; render
    the colour statistics once. On a GPU every net moves to CUDA (ZeroGPU requires it at start)."""
    status = cm.zoo_status(zoo)
    for name in status["checkpoints"]:
        if cfg.device != "cuda" and zoo.role_of(name) not in ("empty", "location"):
            continue
        try:
            net = zoo.get(name)
            if cfg.device == "cuda":
                net.to(cfg.device)
        except Exception as e:  # noqa: BLE001 - a broken checkpoint is reported when it is used
            print(f"[app] warm-up skipped {name}: {type(e).__name__}", file=sys.stderr)
            return
    try:
        tcol.statistics(tcol.resolution(zoo))
    except Exception as e:  # noqa: BLE001
        print(f"[app] colour statistics not cached: {type(e).__name__}: {e}", file=sys.stderr)
    if status["settings"]["A"] and cfg.device == "cpu":
        tc.compose(zoo, [tc.Obj(0.5, 0.6)], "empty", 1, 0, 1, cfg.bf16_fast, parallel=cfg.parallel_sides)


THEME_HUE = "indigo"


def main() -> None:
    problems = []
    try:
        root = cm.resolve_checkpoints()
    except cm.InputError as e:
        root = os.environ.get("PROJCOMP_CHECKPOINTS") or "checkpoints"
        problems.append(str(e))
    zoo, bad = cm.open_zoo(root)
    app = create_app(zoo, problems + bad)
    cfg = app.projcomp_config
    if os.environ.get("PROJCOMP_WARMUP", "1") != "0":  # PROJCOMP_WARMUP=0 skips it (tests)
        if cfg.device == "cuda":
            warm_up(zoo, cfg)
        else:
            threading.Thread(target=warm_up, args=(zoo, cfg), daemon=True).start()
    app.launch(css=CSS, theme=gr.themes.Soft(primary_hue=THEME_HUE), show_error=True)


if __name__ == "__main__":
    main()
