"""Text to image for ``sd_infer`` with diffusers (the seed miner guide's workload), and
its check (specs/market.md, "Checks per workload").

The provider names each pipeline directory under ``[provider.models]``; a directory with a
``model_index.json`` is a diffusers pipeline (Stable Diffusion 1.x/2.x, SDXL, anything
``AutoPipelineForText2Image`` loads). Nothing is downloaded; a job may name a pipeline by
its content hash (``sha256:<hex>``, :func:`aitbc_p2p.compute.context.model_digest`). The
initial latents come from a CPU generator seeded by the job, so every device class starts
from the same noise; each denoising step is a progress event ``{"step", "steps"}``; the
result is a PNG with the digests of its file and of its pixels.

**The trajectory is committed.** The result carries ``latents_root``, the Merkle root
over the latents before the first step and after each (``steps + 1`` leaves, float16,
kept by the provider for audits). A checker re-runs one thing drawn after the receipt
(:func:`check_challenge`): one denoising step from the committed latents before it to
those after it, or the VAE's decode of the last latents into the delivered pixels. A step
costs one ``steps``-th of the job: a provider that skipped or made up a share of the
steps is caught with that share's probability per job, one that made up the whole image
at once. Only a Stable Diffusion pipeline whose scheduler keeps no state from one step to
the next (DDIM, Euler) can be checked so (:func:`uncheckable`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aitbc_p2p.chain.merkle import merkle_root
from aitbc_p2p.compute.context import RunContext, find_model, module_available, pipeline_models, torch_available
from aitbc_p2p.exceptions import ComputeError

_PIPELINES: dict[tuple[str, str], Any] = {}
_LOAD_LOCK = threading.Lock()

STATELESS_SCHEDULERS = ("DDIMScheduler", "EulerDiscreteScheduler")
"""Schedulers whose step depends only on its timestep and the latents before it, so that
one step can be re-run alone (multistep ones, PNDM and DPM-Solver, carry earlier model
outputs; ancestral ones draw fresh noise)."""
STEP_SLACK = 0.05
"""A re-run step's latents may differ from the committed ones by this share of the step's
own change (another device class rounds differently) ..."""
LATENT_FLOOR = 2e-3
"""... plus this share of the latents' size (float16 leaves round by about 2e-4 of it)."""
PIXEL_SLACK = 2.0
"""The delivered pixels may differ from the checker's decode by this many levels (of 255)
on average."""


def _load(path: str, device: str) -> Any:
    key = (path, device)
    with _LOAD_LOCK:
        if key not in _PIPELINES:
            from diffusers import AutoPipelineForText2Image
            from diffusers.utils import logging as diffusers_logging

            diffusers_logging.set_verbosity_error()  # a worker's stderr is the peer's log, not a progress bar
            diffusers_logging.disable_progress_bar()
            if module_available("transformers"):
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # its text encoder's "Loading weights" bar
            pipe = AutoPipelineForText2Image.from_pretrained(path, local_files_only=True).to(device)
            pipe.set_progress_bar_config(disable=True)
            _PIPELINES[key] = pipe
        return _PIPELINES[key]


def _require() -> None:
    if not (torch_available() and module_available("diffusers")):
        raise ComputeError("sd_infer needs torch and diffusers (pip install 'aitbc-p2p[compute]')")


def _pipeline(models: Mapping[str, str], name: str) -> tuple[str, str]:
    found = find_model(models, name, pipeline_models)
    if found is None:
        local = sorted(pipeline_models(models))
        raise ComputeError(f"diffusers pipeline {name!r} is not configured on this provider; it has {local}")
    return found


def _uncheckable(kind: str, scheduler: str, safety_checker: bool, time_cond: object) -> str:
    if kind != "StableDiffusionPipeline":
        return f"a {kind} is not checked step by step (Stable Diffusion 1.x/2.x pipelines are)"
    if scheduler not in STATELESS_SCHEDULERS:
        return f"its scheduler {scheduler} carries state from step to step (checkable: {list(STATELESS_SCHEDULERS)})"
    if safety_checker:
        return "it has a safety checker, which may blank the decoded image"
    if time_cond is not None:
        return "its UNet takes a guidance embedding (a distilled model), not checked step by step"
    return ""


def uncheckable(pipe: Any) -> str:
    """Why a loaded pipeline's steps cannot be re-run one at a time (empty: they can)."""
    return _uncheckable(
        type(pipe).__name__,
        type(pipe.scheduler).__name__,
        getattr(pipe, "safety_checker", None) is not None,
        pipe.unet.config.time_cond_proj_dim,
    )


def pipeline_uncheckable(path: str) -> str:
    """:func:`uncheckable` for the pipeline saved at ``path``, from its configuration files
    (nothing loaded: a client's peer asks before it offers a job)."""
    try:
        index = json.loads((Path(path) / "model_index.json").read_text())
        unet = json.loads((Path(path) / "unet" / "config.json").read_text())
        scheduler = index.get("scheduler") or [None, None]
        checker = index.get("safety_checker") or [None, None]
        return _uncheckable(
            str(index.get("_class_name")), str(scheduler[-1]), checker[-1] is not None, unet.get("time_cond_proj_dim")
        )
    except (OSError, ValueError, AttributeError, IndexError, TypeError) as e:
        return f"its configuration does not read: {e}"


def _fresh_scheduler(pipe: Any, steps: int, device: str) -> Any:
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps, device=device)
    return scheduler


def _shape(pipe: Any, params: Mapping[str, Any]) -> tuple[int, int, int, int]:
    factor = pipe.vae_scale_factor
    return (1, int(pipe.unet.config.in_channels), params["height"] // factor, params["width"] // factor)


def initial_latents(pipe: Any, params: Mapping[str, Any], device: str) -> Any:
    """The latents before the first step, as the pipeline makes them: normal noise from a
    CPU generator seeded by the job, scaled by the scheduler's initial sigma."""
    import torch

    noise = torch.randn(_shape(pipe, params), generator=torch.Generator(device="cpu").manual_seed(params["seed"]))
    return noise.to(device) * _fresh_scheduler(pipe, params["steps"], device).init_noise_sigma


def leaf(latents: Any) -> bytes:
    """One committed leaf: the latents in float16, C order."""
    import torch

    return bytes(latents.detach().to(device="cpu", dtype=torch.float16).contiguous().numpy().tobytes())


def _from_leaf(data: bytes, shape: tuple[int, ...], device: str) -> Any:
    import torch

    return torch.frombuffer(bytearray(data), dtype=torch.float16).reshape(shape).to(device=device, dtype=torch.float32)


def _denoise(
    pipe: Any, params: Mapping[str, Any], device: str, on_step: Callable[[int, Any], None], output_type: str
) -> tuple[Any, list[bytes]]:
    """Run the pipeline; returns its output and the committed leaves (blocking)."""
    import torch

    leaves = [leaf(initial_latents(pipe, params, device))]

    def callback(_pipe: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        leaves.append(leaf(tensors["latents"]))
        on_step(index, tensors["latents"])
        return tensors

    with torch.inference_mode():
        out = pipe(
            prompt=params["prompt"],
            negative_prompt=params["negative_prompt"] or None,
            num_inference_steps=params["steps"],
            width=params["width"],
            height=params["height"],
            guidance_scale=params["guidance_milli"] / 1000,
            generator=torch.Generator(device="cpu").manual_seed(params["seed"]),
            output_type=output_type,
            callback_on_step_end=callback,
        )
    return out, leaves


def text_to_image(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    _require()
    name, path = _pipeline(ctx.models, params["model"])
    pipe = _load(path, ctx.device)
    steps = params["steps"]
    start = time.perf_counter()
    out, leaves = _denoise(pipe, params, ctx.device, lambda i, _: ctx.emit({"step": i + 1, "steps": steps}), "pil")
    elapsed = time.perf_counter() - start
    ctx.keep(b"".join(leaves))  # the provider answers audits from these
    rgb = out.images[0].convert("RGB")
    png = io.BytesIO()
    rgb.save(png, format="PNG")
    data = png.getvalue()
    return {
        "model": name,
        "width": rgb.width,
        "height": rgb.height,
        "steps": steps,
        "seed": params["seed"],
        "format": "png",
        "image": data,
        "digest": hashlib.sha256(data).hexdigest(),
        "pixels_digest": hashlib.sha256(rgb.tobytes()).hexdigest(),
        "latents_root": merkle_root(leaves).hex(),
        "elapsed_ms": int(elapsed * 1000),
        "ms_per_step": int(elapsed * 1000 / steps),
    }


def trajectory(params: dict[str, Any], models: Mapping[str, str], device: str = "cpu") -> list[bytes]:
    """The committed leaves of a job, recomputed without the decode: what a provider
    proves audited latents from when it did not keep them (blocking: the whole job)."""
    _require()
    _, path = _pipeline(models, params["model"])
    _, leaves = _denoise(_load(path, device), params, device, lambda i, latents: None, "latent")
    return leaves


def split_leaves(kept: bytes, steps: int) -> list[bytes] | None:
    """The ``steps + 1`` leaves a run kept, or None if ``kept`` is not that."""
    if not kept or len(kept) % (steps + 1):
        return None
    size = len(kept) // (steps + 1)
    return [kept[i : i + size] for i in range(0, len(kept), size)]


def _close(got: Any, want: Any, change: Any) -> tuple[bool, float]:
    """Whether ``got`` is ``want`` within the slack (``change``: the step's own change),
    and the error as a share of the latents' size."""
    err = float((got - want).norm())
    size = float(want.norm())
    allowed = STEP_SLACK * float(change.norm()) + LATENT_FLOOR * size
    ok = math.isfinite(err) and err <= allowed
    return ok, err / max(size, 1e-12)


def check_challenge(
    params: Mapping[str, Any],
    output: Mapping[str, Any],
    path: str,
    challenge: int,
    leaves: Mapping[int, bytes],
    *,
    device: str = "cpu",
) -> str:
    """Re-run challenge ``challenge`` of an sd_infer job (validated ``params``) with the
    pipeline at ``path``: 1 to ``steps``, that denoising step from leaf ``challenge - 1``
    to leaf ``challenge`` (the first also checks leaf 0 is the seeded noise); ``steps + 1``,
    the decode of leaf ``steps`` into the delivered image. ``leaves``: the committed ones
    it needs, already proved under ``latents_root``. Empty: it holds; else why not
    (blocking; ComputeError where this pipeline cannot be checked so)."""
    import torch

    _require()
    pipe = _load(path, device)
    why = uncheckable(pipe)
    if why:
        raise ComputeError(why)
    steps = int(params["steps"])
    shape = _shape(pipe, params)
    size = 2 * math.prod(shape)
    need = (challenge - 1, challenge) if challenge <= steps else (steps,)
    if not 1 <= challenge <= steps + 1 or any(len(leaves.get(i, b"")) != size for i in need):
        return f"challenge {challenge} needs leaves {list(need)} of {size} bytes each"
    got = {i: _from_leaf(leaves[i], shape, device) for i in need}
    if not all(bool(torch.isfinite(t).all()) for t in got.values()):
        return "a committed leaf holds values that are not finite"
    with torch.inference_mode():
        if challenge > steps:
            return _check_decode(pipe, params, output, got[steps])
        if challenge == 1:
            seeded = initial_latents(pipe, params, device)
            ok, err = _close(got[0], seeded, torch.zeros_like(seeded))
            if not ok:
                return f"the latents before the first step are not the seeded noise (off by {err:.2e})"
        prev = got[challenge - 1]
        want = _step(pipe, params, challenge, prev, device)
        ok, err = _close(got[challenge], want, want - prev)
    if not ok:
        return f"step {challenge} of {steps} re-run does not give the committed latents (off by {err:.2e})"
    return ""


def _step(pipe: Any, params: Mapping[str, Any], challenge: int, prev: Any, device: str) -> Any:
    """Denoising step ``challenge`` (1-based) from ``prev``, as the pipeline's loop does it."""
    import torch

    guidance = params["guidance_milli"] / 1000
    cfg = guidance > 1
    positive, negative = pipe.encode_prompt(params["prompt"], device, 1, cfg, params["negative_prompt"] or None)
    embeds = torch.cat([negative, positive]) if cfg else positive
    scheduler = _fresh_scheduler(pipe, int(params["steps"]), device)
    t = scheduler.timesteps[challenge - 1]
    model_input = scheduler.scale_model_input(torch.cat([prev] * 2) if cfg else prev, t)
    noise = pipe.unet(model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]
    if cfg:
        uncond, text = noise.chunk(2)
        noise = uncond + guidance * (text - uncond)
    return scheduler.step(noise, t, prev, return_dict=False)[0]


def _check_decode(pipe: Any, params: Mapping[str, Any], output: Mapping[str, Any], last: Any) -> str:
    import numpy as np
    from PIL import Image

    image = output.get("image")
    if not isinstance(image, bytes):
        return "the result carries no image"
    try:
        png = Image.open(io.BytesIO(image))
        if png.format != "PNG" or png.size != (params["width"], params["height"]):
            return f"the image is not a {params['width']} x {params['height']} PNG"
        delivered = png.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        return f"the image does not decode: {e}"
    if hashlib.sha256(delivered.tobytes()).hexdigest() != output.get("pixels_digest"):
        return "the pixels_digest is not of the image's pixels"
    decoded = pipe.vae.decode(last / pipe.vae.config.scaling_factor, return_dict=False)[0]
    mine = pipe.image_processor.postprocess(decoded, output_type="pil")[0].convert("RGB")
    diff = float(np.abs(np.asarray(mine, dtype=np.int16) - np.asarray(delivered, dtype=np.int16)).mean())
    if not diff <= PIXEL_SLACK:
        return f"the image is not the last latents decoded: {diff:.1f} levels apart on average"
    return ""
