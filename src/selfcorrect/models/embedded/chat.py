"""Chat templating: the GGUF's own template (Jinja, as the model was trained with it) turns
messages into prompt text, and the model's vocabulary into tokens."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence

from selfcorrect.models.base import Message, check_messages, continues

log = logging.getLogger(__name__)

# Used only for a GGUF without a chat template of its own.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class ChatTemplate:
    """A loaded model's chat template and tokenizer."""

    def __init__(self, llama_cpp, model, vocab, name: str):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama, self._model, self._vocab = llama_cpp, model, vocab
        template = self.meta("tokenizer.chat_template")
        if template is None:
            log.warning("%s has no chat template; using ChatML", name)
            template = CHATML_TEMPLATE

        def token_text(token: int) -> str:
            return llama_cpp.llama_vocab_get_text(vocab, token).decode() if token >= 0 else ""

        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=token_text(llama_cpp.llama_vocab_eos(vocab)),
            bos_token=token_text(llama_cpp.llama_vocab_bos(vocab)),
        )

    def meta(self, key: str) -> str | None:
        """A string from the GGUF's metadata."""
        size = 4096
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._llama.llama_model_meta_val_str(self._model, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", "replace")
            size = n + 1

    def format(self, messages: Sequence[Message]) -> str:
        """The prompt text that the model's chat template makes of these messages; a final
        assistant message is left open, for the model to continue."""
        messages = check_messages(messages)
        if continues(messages):
            return self._formatter(messages=messages[:-1]).prompt + messages[-1]["content"]
        return self._formatter(messages=messages).prompt

    def tokenize(self, text: str) -> list[int]:
        # Chat templates write their own special tokens: parse them, add none.
        data = text.encode()
        tokens = (self._llama.llama_token * (len(data) + 8))()
        n = self._llama.llama_tokenize(self._vocab, data, len(data), tokens, len(tokens), False, True)
        return list(tokens[:n])
