"""Tiny models built on the spot, for tests, demos and benchmarks of ``llm_gen`` and
``sd_infer``.

Nothing is downloaded: a byte-level BPE tokenizer is trained on a few sentences, and
models with seeded random weights are saved next to it: a GPT-2 shaped causal LM, and a
Stable Diffusion pipeline (CLIP text encoder, UNet, VAE, DDIM scheduler). What they make
is nonsense (text, or coloured noise); their shapes, caching, steps and streaming are
those of real models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CORPUS = [
    "AITBC lets AI agents rent GPU compute from providers and pay in a native token.",
    "A provider advertises its device, measured throughput, workloads and price.",
    "A client publishes a job offer; providers answer with bids; escrow locks the payment.",
    "The provider runs the workload, returns the result and posts a signed receipt.",
]


def _tokenizer(**special: str) -> object:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        CORPUS * 4, vocab_size=400, min_frequency=1, special_tokens=list(dict.fromkeys(special.values())),
        show_progress=False,
    )
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, **special)


def build_tiny_causal_lm(
    path: Path, *, layers: int = 2, hidden: int = 64, heads: int = 2, seed: int = 0, init_std: float = 0.3
) -> Path:
    """Save a tokenizer and a GPT-2 shaped model with ``layers`` x ``hidden`` to ``path``.
    ``init_std`` is the weights' spread: GPT-2's own 0.02 gives a model this small almost
    flat logits (every token nearly as likely, so any model's text passes for any
    other's); 0.3 gives it the peaked distributions of a trained model, which a check of
    its generations (compute/llm.py, ``check_generation``) can tell apart."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a demo prints its own progress, not the library's bars

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer: Any = _tokenizer(eos_token="<|endoftext|>")
    tokenizer.save_pretrained(path)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=512,
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=init_std,
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


def build_tiny_sd_pipeline(path: Path, *, channels: tuple[int, int] = (32, 64), seed: int = 0) -> Path:
    """Save a Stable Diffusion pipeline with random weights to ``path`` (about 7 MB).

    Its VAE halves each side once, so a 128 x 128 image denoises 64 x 64 latents; ten steps
    take about a second on one CPU core.
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging
    from transformers import CLIPTextConfig, CLIPTextModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()

    path = Path(path)
    tokenizer: Any = _tokenizer(eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|pad|>")
    tokenizer.model_max_length = 77
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=channels[0],
            intermediate_size=2 * channels[0],
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=channels[0],
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=list(channels),
        down_block_types=["DownEncoderBlock2D"] * len(channels),
        up_block_types=["UpDecoderBlock2D"] * len(channels),
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(path)
    return path
