"""The federation layer: adapter records, FedAvg, settings, one site's step, the client."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedrag_flower.federation.adapters import adapter_arrays, adapter_state, merge_into
from fedrag_flower.federation.settings import FederationSettings
from tests.fake_grid import FakeGrid


def test_fedavg_of_adapter_tensors_matches_hand_computation():
    # Three sites, weights 1, 2 and 5 examples.
    sites = [
        ({"generator.a": torch.tensor([1.0, 2.0]), "retriever.b": torch.tensor([[0.0]])}, 1.0),
        ({"generator.a": torch.tensor([3.0, 4.0]), "retriever.b": torch.tensor([[1.0]])}, 2.0),
        ({"generator.a": torch.tensor([5.0, 0.0]), "retriever.b": torch.tensor([[2.0]])}, 5.0),
    ]
    records = [
        RecordDict({"arrays": adapter_arrays(state), "metrics": MetricRecord({"num-examples": n})})
        for state, n in sites
    ]
    averaged = adapter_state(aggregate_arrayrecords(records, "num-examples"))
    # (1*[1,2] + 2*[3,4] + 5*[5,0]) / 8 = [32/8, 10/8]; (0 + 2 + 10) / 8
    np.testing.assert_allclose(averaged["generator.a"].numpy(), [4.0, 1.25], rtol=1e-6)
    np.testing.assert_allclose(averaged["retriever.b"].numpy(), [[1.5]], rtol=1e-6)


def test_a_round_that_trains_one_side_keeps_the_other_sides_global_tensors():
    previous = adapter_arrays({"generator.a": torch.zeros(2), "retriever.b": torch.ones(3)})
    update = adapter_arrays({"generator.a": torch.full((2,), 7.0)})
    merged = adapter_state(merge_into(previous, update))
    assert merged["generator.a"].tolist() == [7.0, 7.0]
    assert merged["retriever.b"].tolist() == [1.0, 1.0, 1.0]


def test_only_prefixed_adapter_tensors_may_leave_a_site():
    with pytest.raises(ValueError, match="only adapter tensors"):
        adapter_arrays({"chunk_embeddings": torch.zeros(3, 384)})


def test_adapter_record_round_trip_is_exact():
    state = {"generator.x": torch.randn(4, 3), "retriever.y": torch.randn(2)}
    back = adapter_state(adapter_arrays(state))
    for key, value in state.items():
        assert torch.equal(back[key], value)


def test_packed_adapters_are_one_array_a_side_and_unpack_exactly_by_the_layout_sent():
    from flwr.app import ConfigRecord
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    from fedrag_flower.federation.adapters import (
        LAYOUT_KEY,
        pack_content,
        pack_sides,
        received_arrays,
    )

    state = {f"generator.l{i}.lora_{ab}": torch.randn(3, 2 + i) for i in range(12) for ab in "AB"}
    state |= {"retriever.q.lora_A": torch.randn(2, 5), "retriever.s": torch.randn(())}
    record = adapter_arrays(state)
    content = RecordDict({"arrays": record, "config": ConfigRecord({"server-round": 1})})
    objects_before = len(get_all_nested_objects(content))
    pack_content(content)
    assert set(content["arrays"].keys()) == {"generator", "retriever"}
    assert len(get_all_nested_objects(content)) < objects_before / 5  # Flower's objects
    assert len(content["config"][LAYOUT_KEY]) == len(state)
    back = adapter_state(received_arrays(content))
    assert list(back) == sorted(state)
    for key, value in state.items():
        assert torch.equal(back[key], value)
    pack_content(content)  # a record already packed (shared by messages) stays as it is
    assert set(content["arrays"].keys()) == {"generator", "retriever"}
    with pytest.raises(ValueError, match="mixes dtypes"):
        pack_sides(
            adapter_arrays(
                {"generator.a": torch.zeros(2), "generator.b": torch.zeros(2, dtype=torch.float64)}
            )
        )


def test_a_site_refuses_adapters_of_another_layout_naming_the_tensor():
    from flwr.app import ConfigRecord

    from fedrag_flower.federation.adapters import pack_content
    from fedrag_flower.federation.site_replies import load_global_adapters

    class System:  # what load_global_adapters uses of a RAGSystem
        loaded = None

        def adapter_state_dict(self):
            return {"generator.a": torch.zeros(2, 4), "retriever.b": torch.zeros(3)}

        def load_adapter_state_dict(self, state):
            self.loaded = state

    def message(state):
        content = RecordDict({"arrays": adapter_arrays(state), "config": ConfigRecord({})})
        pack_content(content)
        return Message(content, dst_node_id=1, message_type="train")

    FakeGrid({})  # sets the task identity Messages need
    system = System()
    assert load_global_adapters(message(system.adapter_state_dict()), system) is True
    assert set(system.loaded) == {"generator.a", "retriever.b"}
    wrong = {"generator.a": torch.zeros(4, 2), "retriever.b": torch.zeros(3)}  # same size
    with pytest.raises(ValueError, match=r"'generator.a' with shape \(4, 2\).*\(2, 4\)"):
        load_global_adapters(message(wrong), system)


def test_settings_read_the_app_run_config_and_name_bad_keys():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    run_config = pyproject["tool"]["flwr"]["app"]["config"]
    settings = FederationSettings.from_run_config(run_config)
    assert settings.mode in ("ralt", "lsr", "ralt+lsr")
    assert settings.num_server_rounds == run_config["num-server-rounds"]
    with pytest.raises(ValueError, match="unknown run-config key 'lerning-rate'"):
        FederationSettings.from_run_config({"lerning-rate": 0.1})
    with pytest.raises(ValueError, match="'mode' must be one of"):
        FederationSettings.from_run_config({"mode": "retriever"})
    with pytest.raises(ValueError, match="'top-k' must be int"):
        FederationSettings.from_run_config({"top-k": "three"})
    with pytest.raises(ValueError, match="'ralt-context' must be one of"):
        FederationSettings.from_run_config({"ralt-context": "stacked"})
    with pytest.raises(ValueError, match=r"'context-k' must be in \[0, top-k = 2\]"):
        FederationSettings.from_run_config({"top-k": 2, "context-k": 3})


def test_the_system_answers_with_the_prompts_joined_ralt_trains_on():
    settings = FederationSettings.from_run_config({"top-k": 4})  # context-k 0: all top-k
    assert settings.ralt_args(1).context == "joined"
    assert settings.rag_config().context_k == 4
    chosen = FederationSettings.from_run_config({"top-k": 4, "context-k": 1})
    assert chosen.rag_config().context_k == 1
    assert FederationSettings.from_run_config({"ralt-context": "parallel"}).ralt_args(
        1
    ).context == ("parallel")
    assert not FederationSettings().ralt_args(1).supported_only
    chosen = FederationSettings.from_run_config({"ralt-supported-only": True})
    assert chosen.ralt_args(1).supported_only
    assert FederationSettings().adapt_chunks
    assert not FederationSettings.from_run_config({"adapt-chunks": False}).adapt_chunks
    assert FederationSettings().lsr_args(1).gold_candidate
    chosen = FederationSettings.from_run_config({"lsr-gold-candidate": False})
    assert not chosen.lsr_args(1).gold_candidate
    decaying = FederationSettings.from_run_config({"lr-round-decay": 0.5, "lr-generator": 1e-3})
    assert [decaying.ralt_args(r).learning_rate for r in (1, 2, 3)] == [1e-3, 5e-4, 2.5e-4]
    assert decaying.lsr_args(3).learning_rate == pytest.approx(decaying.lr_retriever / 4)
    assert FederationSettings().ralt_args(5).learning_rate == FederationSettings().lr_generator
    with pytest.raises(ValueError, match=r"'lr-round-decay' must be in \(0, 1\]"):
        FederationSettings.from_run_config({"lr-round-decay": 0})


def test_lora_targets_choose_the_generators_adapted_layers(tiny_generator_dir):
    from fedrag_flower.rag.generator import Generator

    settings = FederationSettings.from_run_config({"lora-targets": "q_proj, v_proj", "lora-r": 4})
    lora = settings.generator_lora()
    assert lora.target_modules == ["q_proj", "v_proj"] and lora.r == 4
    adapted = {
        name.split(".")[-2]
        for name, _ in Generator(str(tiny_generator_dir), lora, bf16=False).model.named_modules()
        if name.endswith("lora_A")
    }
    assert adapted == {"q_proj", "v_proj"}
    assert FederationSettings().generator_lora().target_modules == []  # the model's default


def test_every_settings_field_is_in_the_app_config():
    import tomllib
    from dataclasses import fields
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    config = pyproject["tool"]["flwr"]["app"]["config"]
    assert {f.name.replace("_", "-") for f in fields(FederationSettings)} == set(config)
    # One set of defaults: the library's equal the app's.
    defaults = FederationSettings()
    for key, value in config.items():
        assert getattr(defaults, key.replace("-", "_")) == value, key


def test_round_pairs_cycle_through_a_sites_data():
    from fedrag_flower.federation.site import round_pairs

    rows = [{"query": str(i), "response": str(i)} for i in range(10)]
    settings = FederationSettings(pairs_per_round=4)
    seen = [r["query"] for rnd in (1, 2) for r in round_pairs(rows, settings, rnd)]
    assert len(seen) == 8 and len(set(seen)) == 8  # no repeats before the data runs out
    assert round_pairs(rows, FederationSettings(), 1) == rows


# -- one site's step on the real packaged models and data ---------------------------------


@pytest.fixture(scope="module")
def small_settings():
    return FederationSettings(
        local_steps=1, pairs_per_round=4, batch_size=4, lsr_batch_size=4, lsr_top_k=4
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ralt", "lsr", "ralt+lsr"])
def test_each_mode_trains_its_side_and_leaves_the_other(mode, small_settings):
    from fedrag_flower.federation.site import simulation_site, site_rag_system, train_site

    settings = FederationSettings(**{**vars(small_settings), "mode": mode})
    site = simulation_site(0, 3, settings)
    rag = site_rag_system(site, settings)
    before = rag.adapter_state_dict()
    state, metrics = train_site(rag, site, settings, server_round=1)
    sides = {key.split(".", 1)[0] for key in state}
    assert (
        sides
        == {"ralt": {"generator"}, "lsr": {"retriever"}, "ralt+lsr": {"generator", "retriever"}}[
            mode
        ]
    )
    changed = {k.split(".", 1)[0] for k, v in state.items() if not torch.equal(v, before[k])}
    assert changed == sides
    assert metrics["num-examples"] == 4
    assert all(isinstance(v, float) for v in metrics.values())
    rag.load_adapter_state_dict(before)  # the process-wide models are shared by the tests


@pytest.mark.slow
def test_client_reply_holds_only_adapter_tensors_and_scalar_metrics():
    """What a site sends: prefixed adapter tensors of the adapters' own shapes, and scalars."""
    from flwr.app import ConfigRecord, Context

    import client_app
    from fedrag_flower.federation.server import initial_arrays, server_rag_system

    server = server_rag_system(FederationSettings(server_corpus="none"))
    arrays = initial_arrays(server)
    run_config = {
        "local-steps": 1,
        "pairs-per-round": 4,
        "batch-size": 4,
        "lsr-batch-size": 4,
        "lsr-top-k": 4,
    }
    context = Context(
        run_id=1,
        node_id=1,
        node_config={"partition-id": 1, "num-partitions": 3},
        state=RecordDict(),
        run_config=run_config,
    )
    incoming = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})
    FakeGrid({})  # sets the task identity a ServerApp process has, which Messages need
    msg = Message(incoming, dst_node_id=1, message_type="train")
    content = client_app.app(msg, context).content  # through the ClientApp and its mods
    assert set(content.keys()) == {"arrays", "metrics", "site"}
    assert dict(content["site"]) == {"name": "category-3-site1-seed0"}  # the name only
    reply_arrays: ArrayRecord = content["arrays"]
    # The B matrices of both sides (ralt+lsr trains both; A is frozen by default)
    sent = {k: v for k, v in server.adapter_state_dict().items() if ".lora_B." in k}
    expected = {k: tuple(v.shape) for k, v in sent.items()}
    got = {k: tuple(v.shape) for k, v in adapter_state(reply_arrays).items()}
    assert got == expected  # adapter tensors, nothing else (no text, no embeddings)
    assert {k.split(".")[0] for k in got} == {"generator", "retriever"}
    adapter_bytes = sum(v.numel() * 4 for v in sent.values())
    assert reply_arrays.count_bytes() <= adapter_bytes * 1.01  # the tensors plus framing
    metrics = content["metrics"]
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    assert metrics["num-examples"] == 4


def test_the_learning_of_each_round_reads_as_one_line_and_as_a_table():
    from fedrag_flower.federation.reporting import learning_summary, learning_table

    history = [
        {"round": 1, "evaluate": {"f1": 0.5, "recall@1": 0.584, "nll": 0.706, "other": 3.0}},
        {"round": 2, "evaluate": {}},  # a round whose evaluation got no reply
        {"round": 3, "evaluate": {"f1": 0.605, "recall@1": 0.634, "em": 0.416}},
    ]
    assert learning_summary(history[0]["evaluate"]) == "F1 0.500, recall@1 0.584, NLL/token 0.706"
    assert learning_summary({}) == ""
    lines = learning_table(history).splitlines()
    assert lines[0].split() == ["round", "F1", "EM", "recall@1", "NLL/token"]
    assert lines[1].split() == ["1", "0.500", "-", "0.584", "0.706"]
    assert lines[2].split() == ["3", "0.605", "0.416", "0.634", "-"]
    assert len(lines) == 3
    assert learning_table([{"round": 1, "evaluate": {}}]) == ""
