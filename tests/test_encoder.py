"""The retriever's sentence encoders: the plain one reproduces sentence-transformers on the
models it takes, and everything else still loads through sentence-transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedrag_flower.models import PACKAGED_RETRIEVER, resolve_retriever
from fedrag_flower.rag.encoder import (
    PlainEncoder,
    SentenceTransformersEncoder,
    load_encoder,
    plain_layout,
)

ROOT = Path(__file__).resolve().parents[1]
MINILM = Path(resolve_retriever(PACKAGED_RETRIEVER))
TEXTS = [
    "How long does it take to get a building permit?",
    "short",
    "Heat pumps need a notification to the municipality before drilling. " * 30,  # truncated
    "  leading and trailing spaces  ",
    "A ground-source heat pump's borehole must keep 15 m from the neighbour's.",
]


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(MINILM), device="cpu")


def test_the_packaged_minilm_loads_plain(reference):
    encoder = load_encoder(str(MINILM))
    assert isinstance(encoder, PlainEncoder)
    assert (encoder.pooling, encoder.normalize, encoder.max_seq_length) == ("mean", True, 256)
    assert encoder.dim == reference.get_embedding_dimension() == 384


def test_plain_encoder_matches_sentence_transformers_on_minilm(reference):
    """Inference in batches (sorted by length, returned in input order) and a batch with
    gradient, fp32 and under bf16 autocast, against sentence-transformers' own."""
    encoder = load_encoder(str(MINILM))
    texts = TEXTS * 3
    expected = reference.encode(texts, batch_size=4, normalize_embeddings=True)
    np.testing.assert_allclose(encoder.encode(texts, batch_size=4), expected, atol=1e-6)

    features = reference.preprocess(TEXTS)
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            ours = encoder.embed(TEXTS)
            theirs = reference(dict(features))["sentence_embedding"]
        assert ours.requires_grad
        assert ours.dtype == theirs.dtype
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def write_layout(folder: Path, modules: list[str], pooling: dict, **extra: dict) -> Path:
    """A sentence-transformers folder's JSON files (no weights), for ``plain_layout``."""
    kinds = {
        "T": ("", "sentence_transformers.models.Transformer"),
        "P": ("1_Pooling", "sentence_transformers.models.Pooling"),
        "N": ("2_Normalize", "sentence_transformers.models.Normalize"),
        "D": ("2_Dense", "sentence_transformers.models.Dense"),
    }
    folder.mkdir(parents=True)
    entries = [
        {"idx": i, "name": str(i), "path": kinds[k][0], "type": kinds[k][1]}
        for i, k in enumerate(modules)
    ]
    (folder / "modules.json").write_text(json.dumps(entries))
    (folder / "config.json").write_text("{}")
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    settings = extra.get("settings", {"max_seq_length": 128, "do_lower_case": False})
    (folder / "sentence_bert_config.json").write_text(json.dumps(settings))
    if "st_config" in extra:
        (folder / "config_sentence_transformers.json").write_text(json.dumps(extra["st_config"]))
    return folder


MEAN = {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}


def test_plain_layout_reads_what_it_reproduces(tmp_path):
    layout = plain_layout(write_layout(tmp_path / "m", ["T", "P", "N"], MEAN))
    assert layout == {
        "transformer_dir": tmp_path / "m",
        "pooling": "mean",
        "normalize": True,
        "max_seq_length": 128,
    }
    cls = plain_layout(write_layout(tmp_path / "c", ["T", "P"], {"pooling_mode": "cls"}))
    assert (cls["pooling"], cls["normalize"]) == ("cls", False)


@pytest.mark.parametrize(
    "modules, pooling, extra",
    [
        (["T", "P", "D", "N"], MEAN, {}),  # a Dense projection
        (["T", "P", "N"], {"pooling_mode_lasttoken": True}, {}),
        (["T", "P", "N"], {**MEAN, "pooling_mode_max_tokens": True}, {}),  # two modes
        (["T", "P", "N"], {**MEAN, "include_prompt": False}, {}),
        (["T", "P", "N"], MEAN, {"st_config": {"prompts": {"query": "query: "}}}),
        (["T", "P", "N"], MEAN, {"st_config": {"default_prompt_name": "query"}}),
        (["T", "P", "N"], MEAN, {"settings": {"do_lower_case": True}}),
        (["T", "P", "N"], MEAN, {"settings": {"model_args": {"trust_remote_code": True}}}),
        (["P", "T"], MEAN, {}),
    ],
)
def test_plain_layout_leaves_anything_else_to_sentence_transformers(
    tmp_path, modules, pooling, extra
):
    assert plain_layout(write_layout(tmp_path / "m", modules, pooling, **extra)) is None


def test_plain_layout_of_a_folder_without_modules_json(tmp_path):
    assert plain_layout(tmp_path) is None


def test_a_model_the_plain_encoder_does_not_take_trains_through_sentence_transformers(tmp_path):
    """The packaged MiniLM with ``do_lower_case`` set (its tokenizer lower-cases anyway, so
    the embeddings stay the same) goes through sentence-transformers: the retriever built on
    it has the same adapter keys, embeddings and gradients as on the plain encoder."""
    from fedrag_flower.rag.retriever import Retriever

    folder = tmp_path / "minilm-lower"
    folder.mkdir()
    for item in MINILM.iterdir():
        if item.name != "sentence_bert_config.json":
            (folder / item.name).symlink_to(item)
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 256, "do_lower_case": True})
    )
    plain, fallback = Retriever(str(MINILM)), Retriever(str(folder))
    assert isinstance(plain.query_model, PlainEncoder)
    assert isinstance(fallback.query_model, SentenceTransformersEncoder)
    assert fallback.dim == 384
    assert plain.adapter_state_dict().keys() == fallback.adapter_state_dict().keys()

    torch.manual_seed(0)
    state = {k: torch.randn_like(v) * 0.05 for k, v in plain.adapter_state_dict().items()}
    grads = []
    for retriever in (plain, fallback):
        retriever.load_adapter_state_dict(state)
        np.testing.assert_allclose(
            retriever.encode_chunks(TEXTS), plain.encode_chunks(TEXTS), atol=1e-6
        )
        queries = retriever.encode_queries(TEXTS)
        assert np.abs(queries - retriever.encode_chunks(TEXTS)).max() > 1e-3  # adapter on
        retriever.query_embeddings(TEXTS).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in retriever.trainable_parameters()]))
    np.testing.assert_allclose(
        fallback.encode_queries(TEXTS), plain.encode_queries(TEXTS), atol=1e-6
    )
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_the_default_system_loads_without_importing_sentence_transformers():
    """What a deployed ClientApp and ``ask`` import and load: ~1 s less per process."""
    script = (
        "import sys, client_app\n"
        "from fedrag_flower.rag.retriever import Retriever\n"
        "Retriever()\n"
        "print('sentence_transformers' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_query_embeddings_in_length_groups_match_one_padded_batch():
    """``Retriever.query_embeddings`` encodes in groups of similar length: the same
    embeddings (fp32, within rounding) and gradients as one padded batch, in input order."""
    from fedrag_flower.rag.retriever import Retriever

    retriever = Retriever(adapt_chunks=True, bf16=False)
    torch.manual_seed(0)
    state = {k: torch.randn_like(v) * 0.05 for k, v in retriever.adapter_state_dict().items()}
    retriever.load_adapter_state_dict(state)
    texts = [text[: 7 + 31 * i] for i, text in enumerate(TEXTS * 4)]  # 20 mixed lengths

    def embeddings_and_gradient(encode):
        retriever.peft_model.zero_grad()
        embeddings = encode()
        (embeddings * torch.linspace(-1, 1, embeddings.shape[1])).sum().backward()
        grads = [p.grad.flatten() for p in retriever.trainable_parameters()]
        return embeddings.detach(), torch.cat(grads)

    grouped, grouped_grad = embeddings_and_gradient(lambda: retriever.query_embeddings(texts, 6))
    one, one_grad = embeddings_and_gradient(
        lambda: torch.nn.functional.normalize(retriever.query_model.embed(texts), dim=-1)
    )
    assert grouped.shape == (20, 384)
    torch.testing.assert_close(grouped, one, atol=1e-5, rtol=0)
    torch.testing.assert_close(grouped_grad, one_grad, atol=1e-5, rtol=1e-4)
    assert retriever.query_embeddings([]).shape == (0, 384)


def test_pooling_counts_only_real_tokens_whichever_side_pads():
    from fedrag_flower.rag.encoder import _pool

    tokens = torch.arange(24, dtype=torch.float32).view(2, 4, 3)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    torch.testing.assert_close(_pool(tokens, right, "mean")[0], tokens[0, :2].mean(0))
    torch.testing.assert_close(_pool(tokens, left, "mean")[0], tokens[0, 2:].mean(0))
    torch.testing.assert_close(
        _pool(tokens, left, "cls"), torch.stack([tokens[0, 2], tokens[1, 0]])
    )
    torch.testing.assert_close(_pool(tokens, right, "max")[0], tokens[0, 1])
