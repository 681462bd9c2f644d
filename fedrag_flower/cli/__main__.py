"""``python -m fedrag_flower.cli ...``: the ``fedrag-flower`` command without its script."""

from fedrag_flower.cli import console

console()
