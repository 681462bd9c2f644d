"""What every trainer holds: the RAG system it trains in place, its rows, its arguments."""

from __future__ import annotations

from typing import Any

from fedrag_flower.data import as_rows
from fedrag_flower.trainers.args import TrainingArgs, with_overrides


class Trainer:
    """Base of the trainers: ``Trainer(rag_system, train_dataset, args, **overrides)``.

    ``train_dataset`` is any form ``fedrag_flower.data.as_rows`` accepts (list of column
    dicts, column dict, row dicts, ``datasets.Dataset``); ``args`` an instance of the
    subclass's ``args_class``, whose single fields keyword arguments override.
    """

    args_class: type[TrainingArgs] = TrainingArgs

    def __init__(
        self, rag_system: Any, train_dataset: Any, args: TrainingArgs | None = None, **overrides
    ) -> None:
        self.rag_system = rag_system
        self.rows = as_rows(train_dataset)
        self.args = with_overrides(args or self.args_class(), overrides)
