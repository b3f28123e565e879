"""Sampler chains and log-probabilities. Sample k of a request samples with its own chain,
seeded by `sample_seed(seed, k)`, so a draw is the same whoever asks for it."""

from __future__ import annotations

from selfcorrect.models.base import SamplingParams, sample_seed


def sampler_chain(llama_cpp, params: SamplingParams, index: int):
    """llama.cpp's sampler chain for sample `index`: top_k, top_p, temperature, then a draw
    seeded by the sample index (greedy alone at temperature 0)."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    if params.greedy:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    if params.top_k:
        add(chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
    if params.top_p < 1.0:
        add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
    add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
    add(chain, llama_cpp.llama_sampler_init_dist(sample_seed(params.seed, index)))
    return chain


def token_logprob(llama_cpp, ctx, row: int, token: int, n_vocab: int) -> float:
    """log p(token) under the model's full distribution at a batch row (before sampling's
    truncation and temperature)."""
    import numpy as np

    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, row), shape=(n_vocab,))
    top = float(logits.max())
    return float(logits[token]) - top - float(np.log(np.exp(logits - top).sum()))
