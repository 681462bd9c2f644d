"""Run-config overrides written as on the ``flwr run --run-config`` command line."""

from __future__ import annotations

from flwr.common.config import parse_config_args


def parse_run_config(text: str) -> dict:
    """``"num-server-rounds=3 mode='lsr'"`` as ``{"num-server-rounds": 3, "mode": "lsr"}``,
    by Flower's own parser, so a key reads the same here as in ``flwr run``."""
    return parse_config_args([text]) if text.strip() else {}
