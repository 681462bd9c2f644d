"""How much of a passage the retriever reads: its tokenizer's window, in word pieces.

A sentence-transformers encoder truncates its input to ``max_seq_length`` word pieces
(256 for all-MiniLM-L6-v2), so of a longer chunk only the start is embedded and the rest can
never be retrieved. :class:`PassageWindow` counts word pieces with the retriever's own
tokenizer (only the tokenizer is loaded, not the model) and names the chunks that overflow.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedrag_flower.data.errors import DataWarning
from fedrag_flower.data.records import located_warning

_BATCH = 512


@dataclass(frozen=True)
class PassageWindow:
    """A retriever's input window.

    Attributes:
        name: the retriever, as messages name it.
        size: how many word pieces it reads, special tokens included.
        count: the word pieces of each text, special tokens included.
    """

    name: str
    size: int
    count: Callable[[list[str]], list[int]]

    @classmethod
    def from_model_folder(cls, folder: str | Path, name: str | None = None) -> PassageWindow:
        """The window of a saved sentence-transformers model: its tokenizer and its
        ``max_seq_length`` (``sentence_bert_config.json``, else the tokenizer's maximum)."""
        from transformers import AutoTokenizer  # heavy: only when a window is checked

        folder = Path(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        size = tokenizer.model_max_length
        config = folder / "sentence_bert_config.json"
        if config.is_file():
            size = int(json.loads(config.read_text("utf-8")).get("max_seq_length", size))

        def count(texts: list[str]) -> list[int]:
            ids = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)
            return [len(piece_ids) for piece_ids in ids["input_ids"]]

        return cls(name or folder.name, size, count)

    def over_long(
        self, path: Path, rows: Sequence[dict], positions: Sequence[int]
    ) -> list[DataWarning]:
        """A warning for each chunk (``rows`` of a corpus at ``positions`` in ``path``)
        longer than the window."""
        warnings = []
        for start in range(0, len(rows), _BATCH):
            texts = [row["text"] for row in rows[start : start + _BATCH]]
            for offset, pieces in enumerate(self.count(texts)):
                if pieces > self.size:
                    warnings.append(
                        located_warning(
                            path,
                            f"the passage is {pieces:,} word pieces, and the retriever "
                            f"({self.name}) embeds only the first {self.size}: the rest can "
                            "never be retrieved. Split it into smaller chunks.",
                            row=positions[start + offset],
                            field="text",
                        )
                    )
        return warnings
