"""The one place that turns (query, context, response) into token ids and loss labels."""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = -100  # label of tokens that carry no loss (prompt and padding)

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer the question using the context. "
    "If the context does not contain the answer, answer from what you know."
)
DEFAULT_PROMPT_TEMPLATE = "Context:\n{context}\n\nQuestion: {query}"


@dataclass
class Example:
    """One tokenized training/scoring sequence: prompt followed by target.

    ``labels`` equal ``input_ids`` on target tokens and ``IGNORE_INDEX`` on prompt tokens.
    """

    input_ids: list[int]
    labels: list[int]

    @property
    def num_target_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


class PromptBuilder:
    """Renders prompts with the tokenizer's chat template (when it has one) and tokenizes
    prompt + response pairs. When a pair is longer than ``max_length``, the context is cut
    first; the target is cut only when it alone is longer than ``max_length - 8`` tokens
    (see :meth:`example`).

    Args:
        tokenizer: a Hugging Face tokenizer.
        template: user-message template with ``{query}`` and ``{context}`` fields.
        system_prompt: system message ('' for none).
        max_length: longest prompt + target sequence, in tokens. The query, system prompt
            and template are never cut, so a query that alone overflows gives a longer one.
    """

    def __init__(self, tokenizer, template: str, system_prompt: str, max_length: int) -> None:
        for field_name in ("{query}", "{context}"):
            if field_name not in template:
                raise ValueError(f"the prompt template must contain {field_name}: {template!r}")
        self.tokenizer = tokenizer
        self.template = template
        self.system_prompt = system_prompt
        self.max_length = max_length
        self.eos_token_id = tokenizer.eos_token_id

    def render(self, query: str, context: str) -> str:
        """The prompt text, ending where the model's answer starts."""
        user = self.template.format(query=query, context=context)
        if self.tokenizer.chat_template:
            messages = [{"role": "user", "content": user}]
            if self.system_prompt:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        system = f"{self.system_prompt}\n\n" if self.system_prompt else ""
        return f"{system}{user}\nAnswer: "

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, query: str, context: str, reserve: int = 0) -> list[int]:
        """Prompt token ids; if prompt + ``reserve`` tokens exceed ``max_length``, the
        context is cut from its end until they fit."""
        ids = self._ids(self.render(query, context))
        overflow = len(ids) + reserve - self.max_length
        if overflow > 0 and context:
            context_ids = self._ids(context)
            keep = max(len(context_ids) - overflow - 2, 0)  # 2: slack for merges at the cut
            ids = self._ids(self.render(query, self.tokenizer.decode(context_ids[:keep])))
        return ids

    def target_ids(self, response: str) -> list[int]:
        """Response tokens followed by EOS, so the model learns to stop."""
        ids = self._ids(response)
        return ids + [self.eos_token_id] if self.eos_token_id is not None else ids

    def example(self, query: str, context: str, response: str) -> Example:
        """Prompt + target tokens, with loss labels on the target only.

        The target (response + EOS) keeps its first ``max_length - 8`` tokens (a longer one
        loses its end, EOS included), so a few tokens are left for the prompt; the context
        is then cut from its end until prompt + target fit in ``max_length``.
        """
        target = self.target_ids(response)[: self.max_length - 8]
        prompt = self.prompt_ids(query, context, reserve=len(target))
        return Example(prompt + target, [IGNORE_INDEX] * len(prompt) + target)


def join_context(texts: list[str]) -> str:
    """Several chunks as one context string."""
    return "\n\n".join(texts)
