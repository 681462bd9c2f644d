"""A site's round is a function of its inputs: what ran before in the process (other
sites, earlier rounds, anything that drew from torch's generator) does not change it."""

from __future__ import annotations

import torch

from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.site import train_site
from tests.test_comparison import TINY_SETTINGS, tiny_sites


def test_a_sites_round_does_not_depend_on_what_ran_before_it_in_the_process(tiny_rag, tmp_path):
    settings = FederationSettings(**(TINY_SETTINGS | {"mode": "lsr"}))
    site = tiny_sites(tmp_path, sizes=(3,))[0]
    dropouts = [m for m in tiny_rag.retriever.query_model.modules()
                if isinstance(m, torch.nn.Dropout) and m.p > 0]  # fmt: skip
    assert dropouts  # MiniLM trains with dropout: its masks come from torch's generator
    initial = tiny_rag.adapter_state_dict()
    runs = []
    for draws in (0, 7):
        torch.manual_seed(123)
        torch.rand(draws)  # a process whose history differs
        tiny_rag.load_adapter_state_dict(initial)
        state, _ = train_site(tiny_rag, site, settings, server_round=2)
        runs.append(state)
        after = torch.rand(1)
        torch.manual_seed(123)
        torch.rand(draws)
        assert torch.equal(after, torch.rand(1))  # the caller's generator is left as it was
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert any(not torch.equal(runs[0][k], initial[k]) for k in runs[0])  # it trained
