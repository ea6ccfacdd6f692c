"""A tiny causal language model built on the spot, for tests and benchmarks of ``llm_gen``.

Nothing is downloaded: a byte-level BPE tokenizer is trained on a few sentences and a
GPT-2 shaped model with seeded random weights is saved next to it. The text it writes
is nonsense; its shapes, caching and streaming are those of a real model.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "AITBC lets AI agents rent GPU compute from providers and pay in a native token.",
    "A provider advertises its device, measured throughput, workloads and price.",
    "A client publishes a job offer; providers answer with bids; escrow locks the payment.",
    "The provider runs the workload, returns the result and posts a signed receipt.",
]


def build_tiny_causal_lm(path: Path, *, layers: int = 2, hidden: int = 64, heads: int = 2, seed: int = 0) -> Path:
    """Save a tokenizer and a GPT-2 shaped model with ``layers`` x ``hidden`` to ``path``."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a demo prints its own progress, not the library's bars

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        CORPUS * 4, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"], show_progress=False
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>")
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
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    return path
