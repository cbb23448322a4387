"""SDXL prompt composition (projcomp.sdxl) on a tiny random-weight SDXL pipeline, fully offline.

The reference for correctness is diffusers' own StableDiffusionXLPipeline: Def 5.1 with one prompt
over the background "" is CFG with guidance_scale w and negative_prompt "".
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from projcomp import sdxl  # noqa: E402
from projcomp.sdxl import ComposeSpec, ModelNotAllowedError, SDXLSpecError, compose  # noqa: E402
from projcomp.testing import tiny_sdxl_pipeline  # noqa: E402

H = W = 16  # pixels -> 8x8 latents (VAE factor 2)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tiny_sdxl"))
    tiny_sdxl_pipeline(path)
    return path


@pytest.fixture(scope="module")
def pipe(model_dir):
    return sdxl.load_pipeline(model_dir, device="cpu")


def spec(**kw):
    base = dict(prompts=["photo of a dog"], weights=None, background="", steps=3, seeds=[0], model="tiny",
                height=H, width=W)
    base.update(kw)
    return ComposeSpec(**base)


def stock(pipe, prompt, seed, **kw):
    g = torch.Generator().manual_seed(seed)
    return pipe(prompt, generator=g, height=H, width=W, output_type="latent", guidance_rescale=0.0, **kw).images


# --- parity with the stock pipeline (CFG = Def 5.1 with k = 1) ----------------------------------

@pytest.mark.parametrize("w", [3.0, 1.7])
@pytest.mark.parametrize("scheduler", ["euler", "heun"])
def test_one_prompt_equals_stock_cfg(pipe, w, scheduler):
    from projcomp.sdxl import make_scheduler

    pipe.register_to_config(force_zeros_for_empty_prompt=False)
    ours = compose(pipe, spec(weights=[w], steps=3, seeds=[7], scheduler=scheduler), output_type="latent")
    original = pipe.scheduler
    pipe.scheduler = make_scheduler(scheduler, original.config)
    try:
        ref = stock(pipe, "photo of a dog", 7, guidance_scale=w, negative_prompt="", num_inference_steps=3)
    finally:
        pipe.scheduler = original
    torch.testing.assert_close(ours.latents, ref, rtol=1e-5, atol=1e-5)
    assert ours.num_unet_calls == (3 if scheduler == "euler" else 5)  # Heun: 2 x 3 - 1 evaluations, one call each


def test_zeros_background_equals_stock_force_zeros(pipe):
    pipe.register_to_config(force_zeros_for_empty_prompt=True)
    try:
        ours = compose(pipe, spec(weights=[2.5], background=None, seeds=[3]), output_type="latent")
        ref = stock(pipe, "photo of a dog", 3, guidance_scale=2.5, num_inference_steps=3)  # negative_prompt=None
    finally:
        pipe.register_to_config(force_zeros_for_empty_prompt=False)
    torch.testing.assert_close(ours.latents, ref, rtol=1e-5, atol=1e-5)
    empty = compose(pipe, spec(weights=[2.5], background="", seeds=[3]), output_type="latent")
    assert (empty.latents - ours.latents).abs().max() > 1e-3  # zeros and "" are different backgrounds


def test_decoded_images_equal_stock(pipe):
    ours = compose(pipe, spec(weights=[2.0], seeds=[1]), output_type="np").images
    g = torch.Generator().manual_seed(1)
    ref = pipe("photo of a dog", negative_prompt="", guidance_scale=2.0, num_inference_steps=3, generator=g,
               height=H, width=W, output_type="np").images
    np.testing.assert_allclose(ours, ref, atol=1e-5)


# --- batching, chunking, seeds -------------------------------------------------------------------

PROMPTS = ["photo of a dog", "photo, with red hat", "oil painting"]


def test_batched_equals_per_prompt_evaluation(pipe):
    s = spec(prompts=PROMPTS, weights=[1.0, 0.5, -0.7]).validate()
    terms = sdxl.encode_terms(pipe, s)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    time_ids = pipe._get_add_time_ids((H, W), (0, 0), (H, W), torch.float32, 32)
    counter = [0, 0]
    with torch.no_grad():
        batched = sdxl.term_predictions(pipe, terms, x, t, time_ids, counter=counter)
        assert counter == [1, 8]  # (k+1) x B = 4 x 2 rows in ONE call
        chunked = sdxl.term_predictions(pipe, terms, x, t, time_ids, max_batch=3, counter=counter)
        assert counter == [1 + 3, 16]
        for j, text in enumerate([""] + PROMPTS):  # each term on its own, encoded on its own
            pe, _, pp, _ = pipe.encode_prompt(text, device="cpu", do_classifier_free_guidance=False)
            for b in range(2):
                alone = pipe.unet(x[b:b + 1], t, encoder_hidden_states=pe,
                                  added_cond_kwargs={"text_embeds": pp, "time_ids": time_ids}).sample
                torch.testing.assert_close(batched[j, b:b + 1], alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked, batched, rtol=1e-5, atol=1e-5)


def test_chunked_composition_equals_one_call(pipe):
    a = compose(pipe, spec(prompts=PROMPTS, weights=[1.0, 1.0, 0.5], seeds=[0, 1]), output_type="latent")
    b = compose(pipe, spec(prompts=PROMPTS, weights=[1.0, 1.0, 0.5], seeds=[0, 1], max_batch=1), output_type="latent")
    assert a.num_unet_calls == 3 and b.num_unet_calls == 3 * 8
    assert a.num_unet_rows == b.num_unet_rows == 3 * 8
    torch.testing.assert_close(a.latents, b.latents, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scheduler", ["euler", "heun", "euler_a"])
def test_batch_of_seeds_equals_single_runs(pipe, scheduler):
    kw = dict(prompts=PROMPTS[:2], weights=[1.0, 1.0], scheduler=scheduler, steps=2)
    batch = compose(pipe, spec(seeds=[0, 1, 2], **kw), output_type="np").images
    singles = [compose(pipe, spec(seeds=[s], **kw), output_type="np").images[0] for s in (0, 1, 2)]
    np.testing.assert_allclose(batch, np.stack(singles), atol=1e-5)
    assert np.abs(batch[0] - batch[1]).max() > 1e-3  # different seeds, different images


def test_linearity_identical_prompts_add_weights(pipe):
    # Def 5.1 is linear in the weights: the same prompt twice with a, b equals it once with a + b.
    two = compose(pipe, spec(prompts=["photo of a dog"] * 2, weights=[1.5, 0.75]), output_type="latent")
    one = compose(pipe, spec(prompts=["photo of a dog"], weights=[2.25]), output_type="latent")
    torch.testing.assert_close(two.latents, one.latents, rtol=1e-4, atol=1e-4)
    neg = compose(pipe, spec(prompts=["photo of a dog"], weights=[-1.0]), output_type="latent")
    assert (neg.latents - one.latents).abs().max() > 1e-3


def test_progress_callback_counts_every_evaluation(pipe):
    seen = []
    compose(pipe, spec(scheduler="heun", steps=3), callback=lambda i, n, z: seen.append((i, n, tuple(z.shape))),
            output_type="latent")
    assert seen == [(i, 5, (1, 4, 8, 8)) for i in range(1, 6)]


# --- LoRA per concept -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_dir(model_dir, tmp_path_factory):
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    p = StableDiffusionXLPipeline.from_pretrained(model_dir, local_files_only=True)  # a local folder: never the Hub
    torch.manual_seed(1)
    p.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                  target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():  # make the (random) LoRA strong enough to matter on a tiny UNet
        for n, prm in p.unet.named_parameters():
            if "lora_B" in n:
                prm.mul_(10.0)
    out = str(tmp_path_factory.mktemp("lora"))
    StableDiffusionXLPipeline.save_lora_weights(out, unet_lora_layers=get_peft_model_state_dict(p.unet))
    return out


def test_lora_applies_to_its_term_only(pipe, lora_dir):
    base = compose(pipe, spec(weights=[1.0], seeds=[4]), output_type="latent").latents
    with_lora = compose(pipe, spec(weights=[1.0], seeds=[4], loras=[lora_dir]), output_type="latent").latents
    assert (with_lora - base).abs().max() > 1e-3
    # w = 1, one term: the background cancels, eps = eps_dog^LoRA = the stock pipeline with the adapter on.
    name = sdxl._adapter_name(lora_dir)
    pipe.enable_lora()
    pipe.set_adapters([name], [1.0])
    try:
        ref = stock(pipe, "photo of a dog", 4, guidance_scale=1.0, num_inference_steps=3)
    finally:
        pipe.disable_lora()
    torch.testing.assert_close(with_lora, ref, rtol=1e-5, atol=1e-5)
    # Mixed adapters: [dog + LoRA, hat (base)] over background = hat -> eps_dog^LoRA + eps_hat - eps_hat.
    # Holds only if the hat term and the background both ran WITHOUT the LoRA (separate group/call).
    mixed = compose(pipe, spec(prompts=["photo of a dog", "photo, with red hat"], weights=[1.0, 1.0],
                               background="photo, with red hat", seeds=[4], loras=[lora_dir, None]),
                    output_type="latent")
    torch.testing.assert_close(mixed.latents, ref, rtol=1e-4, atol=1e-4)
    assert mixed.num_unet_calls == 2 * 3  # two adapter groups per step
    # After a LoRA run the pipeline is back on base weights.
    again = compose(pipe, spec(weights=[1.0], seeds=[4]), output_type="latent").latents
    torch.testing.assert_close(again, base, rtol=1e-6, atol=1e-6)


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, field", [
    (dict(prompts=[]), "prompts"),
    (dict(prompts=["a", "b"], weights=[1.0]), "weights"),
    (dict(weights=[float("nan")]), "weights"),
    (dict(weights=[float("inf")]), "weights"),
    (dict(seeds=[]), "seeds"),
    (dict(steps=0), "steps"),
    (dict(scheduler="plms9"), "scheduler"),
    (dict(height=20), "height"),
])
def test_bad_spec_is_one_clear_error(kw, field):
    with pytest.raises(SDXLSpecError) as e:
        spec(**kw).validate()
    assert e.value.field == field and str(e.value).startswith(field + ":")
    assert isinstance(e.value, ValueError)


def test_model_not_allowed(tmp_path):
    with pytest.raises(ModelNotAllowedError) as e:
        sdxl.load_pipeline("someone/not-sdxl")
    assert e.value.field == "model" and "someone/not-sdxl" in str(e.value)
    with pytest.raises(ModelNotAllowedError):
        sdxl.load_pipeline(str(tmp_path / "missing"))
    assert sdxl.check_model("stabilityai/stable-diffusion-xl-base-1.0") == "hub"


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "projcomp.sdxl", *args], capture_output=True, text=True, cwd=REPO,
                          **kw)


@pytest.mark.parametrize("args, field", [
    (["--weights", "1"], "prompts"),
    (["--prompt", "a", "--prompt", "b", "--weights", "1"], "weights"),
    (["--prompt", "a", "--weights", "nan"], "weights"),
    (["--prompt", "a", "--model", "evil/model"], "model"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, field):
    assert sdxl.main([*args, "--outdir", str(tmp_path / "o")]) != 0
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), lines
    assert not (tmp_path / "o").exists()


def test_cli_process_exits_nonzero(tmp_path):
    r = _cli("--prompt", "a", "--model", "evil/model", "--outdir", str(tmp_path / "o"))
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [
        f"error: model: 'evil/model' is neither a local folder nor one of {sorted(sdxl.ALLOWED_MODELS)}"]


# --- CLI end to end -------------------------------------------------------------------------

def test_cli_writes_pngs_spec_and_heuristic(model_dir, tmp_path):
    from PIL import Image

    out = tmp_path / "out"
    # In-process (the interpreter start-up and imports of a subprocess cost ~10 s on 2 shared cores;
    # test_cli_process_exits_nonzero runs the real `python -m projcomp.sdxl` entry point).
    assert sdxl.main(["--prompt", "photo of a dog", "--prompt", "photo, with red hat", "--weights", "1", "1.5",
                      "--background", "", "--steps", "2", "--seeds", "0", "3", "--model", model_dir,
                      "--scheduler", "heun", "--height", str(H), "--width", str(W), "--outdir", str(out),
                      "--heuristic", "both", "--device", "cpu"]) == 0
    rec = json.loads((out / "spec.json").read_text())
    assert rec["prompts"] == ["photo of a dog", "photo, with red hat"] and rec["weights"] == [1.0, 1.5]
    assert rec["background"] == "" and rec["scheduler"] == "heun" and rec["seeds"] == [0, 3]
    assert rec["outputs"] == ["seed000000.png", "seed000003.png"]
    assert [h["mode"] for h in rec["heuristic"]] == ["text", "image"]
    for name in rec["outputs"] + ["heuristic_text.png", "heuristic_image.png", "heuristic.json"]:
        assert (out / name).is_file()
    img = np.asarray(Image.open(out / "seed000003.png"))
    assert img.shape == (H, W, 3)
    # The written spec reproduces the same images.
    out2 = tmp_path / "again"
    assert sdxl.main(["--spec", str(out / "spec.json"), "--outdir", str(out2), "--device", "cpu"]) == 0
    assert np.array_equal(np.asarray(Image.open(out2 / "seed000003.png")), img)


# --- heuristic (Lemma 8.1, Fig 8) ------------------------------------------------------------

def test_prompt_heuristic_is_computed(pipe):
    a = sdxl.prompt_heuristic(pipe, ["photo of a dog", "photo of a horse", "photo, with red hat"], "")
    m = torch.tensor(a["matrix"])
    assert m.shape == (3, 3)
    torch.testing.assert_close(m, m.T)
    torch.testing.assert_close(torch.diagonal(m), torch.ones(3, dtype=m.dtype))
    assert bool((m.abs() <= 1 + 1e-9).all())
    off = m[~torch.eye(3, dtype=torch.bool)]
    assert off.abs().max() < 1 - 1e-6 and off.std() > 1e-4  # not constant, not degenerate
    assert len(a["verdict"]["pairs"]) == 3 and a["verdict"]["threshold"] == 0.5
    # Identical prompts point the same way: cos = 1.
    same = sdxl.prompt_heuristic(pipe, ["photo of a dog", "photo of a dog"], "")
    assert same["matrix"][0][1] == pytest.approx(1.0, abs=1e-9) and same["names"][0] != same["names"][1]
    # Changing a prompt, the background, or the space changes the numbers.
    b = sdxl.prompt_heuristic(pipe, ["photo of a dog", "oil painting", "photo, with red hat"], "")
    c = sdxl.prompt_heuristic(pipe, ["photo of a dog", "photo of a horse", "photo, with red hat"], "a photo")
    d = sdxl.prompt_heuristic(pipe, ["photo of a dog", "photo of a horse", "photo, with red hat"], "", space="tokens")
    for other in (b, c, d):
        assert abs(other["matrix"][0][1] - a["matrix"][0][1]) > 1e-4
    # Zeros background: "" stands in for it, so the numbers equal the "" ones.
    z = sdxl.prompt_heuristic(pipe, ["photo of a dog", "photo of a horse", "photo, with red hat"], None)
    assert z["background_used"] == "" and z["matrix"] == a["matrix"]
    # The vector really is text_encoder_2's projected pooled output minus that of "".
    tok = pipe.tokenizer_2(["photo of a dog", "photo of a horse", ""], padding="max_length", max_length=77,
                           truncation=True, return_tensors="pt")
    with torch.no_grad():
        e = pipe.text_encoder_2(tok.input_ids).text_embeds.double()
    u, v = e[0] - e[2], e[1] - e[2]
    assert a["matrix"][0][1] == pytest.approx(float(u @ v / (u.norm() * v.norm())), abs=1e-6)


def test_image_heuristic_on_given_images(pipe):
    from PIL import Image

    rng = np.random.default_rng(0)

    def imgs(mean, n=3):
        return [Image.fromarray(np.clip(rng.normal(mean, 20, (32, 32, 3)), 0, 255).astype(np.uint8)) for _ in range(n)]

    groups = {"red": imgs([200, 30, 30]), "red again": imgs([200, 30, 30]), "blue": imgs([30, 30, 200]),
              "background": imgs([128, 128, 128])}
    res = sdxl.image_heuristic(pipe, spec(prompts=["red", "red again", "blue"]), images=groups)
    m = torch.tensor(res["matrix"])
    assert res["names"] == ["red", "red again", "blue"]
    assert m[0, 1] > m[0, 2]  # same concept's samples point the same way
    with pytest.raises(SDXLSpecError):
        sdxl.image_heuristic(pipe, spec(), images={"red": groups["red"]})


def test_cli_heuristic_only_writes_no_images(model_dir, tmp_path):
    out = tmp_path / "fig8"
    assert sdxl.main(["--prompt", "photo of a dog", "--prompt", "photo of a horse", "--prompt", "hat",
                      "--model", model_dir, "--outdir", str(out), "--heuristic-only", "--device", "cpu"]) == 0
    rec = json.loads((out / "heuristic.json").read_text())
    assert rec[0]["mode"] == "text" and len(rec[0]["matrix"]) == 3
    assert sorted(p.name for p in out.iterdir()) == ["heuristic.json", "heuristic_text.png", "spec.json"]
