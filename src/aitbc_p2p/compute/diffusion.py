"""Text to image for ``sd_infer`` with diffusers (the seed miner guide's workload).

The provider names each pipeline directory under ``[provider.models]``; a directory with a
``model_index.json`` is a diffusers pipeline (Stable Diffusion 1.x/2.x, SDXL, anything
``AutoPipelineForText2Image`` loads). Nothing is downloaded. The initial latents come
from a CPU generator seeded by the job, so every device class starts from the same noise;
each denoising step is a progress event ``{"step", "steps"}``; the result is a PNG with the
digests of its file and of its pixels.
"""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any

from aitbc_p2p.compute.context import RunContext, module_available, pick_model, pipeline_models, torch_available
from aitbc_p2p.exceptions import ComputeError

_PIPELINES: dict[tuple[str, str], Any] = {}


def _load(path: str, device: str) -> Any:
    key = (path, device)
    if key not in _PIPELINES:
        from diffusers import AutoPipelineForText2Image
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()  # a worker's stderr is the peer's log, not a progress bar
        diffusers_logging.disable_progress_bar()
        pipe = AutoPipelineForText2Image.from_pretrained(path, local_files_only=True).to(device)
        pipe.set_progress_bar_config(disable=True)
        _PIPELINES[key] = pipe
    return _PIPELINES[key]


def text_to_image(params: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    if not (torch_available() and module_available("diffusers")):
        raise ComputeError("sd_infer needs torch and diffusers (pip install 'aitbc-p2p[compute]')")
    import torch

    name, path = pick_model(pipeline_models(ctx.models), params["model"], "diffusers pipeline")
    pipe = _load(path, ctx.device)
    steps = params["steps"]

    def on_step(_pipe: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        ctx.emit({"step": index + 1, "steps": steps})
        return tensors

    start = time.perf_counter()
    with torch.inference_mode():
        image = pipe(
            prompt=params["prompt"],
            negative_prompt=params["negative_prompt"] or None,
            num_inference_steps=steps,
            width=params["width"],
            height=params["height"],
            guidance_scale=params["guidance_milli"] / 1000,
            generator=torch.Generator(device="cpu").manual_seed(params["seed"]),
            output_type="pil",
            callback_on_step_end=on_step,
        ).images[0]
    elapsed = time.perf_counter() - start
    rgb = image.convert("RGB")
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
        "elapsed_ms": int(elapsed * 1000),
        "ms_per_step": int(elapsed * 1000 / steps),
    }
