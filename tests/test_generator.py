"""The generator's generation path: the adapter is folded into the base weights for
decoding, and the weights are put back exactly afterwards."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedrag_flower.losses.ralt import RALTLoss
from fedrag_flower.rag.generator import Generator
from fedrag_flower.trainers.huggingface.ralt import HuggingFaceTrainerForRALT
from tests.conftest import TINY_LORA
from tests.test_losses import random_batch


def tiny_generator(path, bf16: bool) -> Generator:
    generator = Generator(str(path), TINY_LORA, bf16=bf16)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        for name, param in generator.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)  # a fresh adapter is a no-op: make it count
    return generator


@pytest.mark.parametrize("bf16", [False, True])
def test_generation_puts_the_weights_back_exactly_and_keeps_the_adapter(tiny_generator_dir, bf16):
    generator = tiny_generator(tiny_generator_dir, bf16=bf16)
    before = {k: v.detach().clone() for k, v in generator.model.state_dict().items()}
    batch, _ = random_batch(prompt_lengths=(12, 7), target_lengths=(9, 14))
    with torch.no_grad(), generator.autocast():
        loss_before = RALTLoss()(generator.model, **batch)
    prompts = [generator.tokenizer("Question: why?")["input_ids"]] * 2
    answers = generator.generate(prompts, max_new_tokens=6)
    assert len(answers) == 2
    after = generator.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad(), generator.autocast():
        assert RALTLoss()(generator.model, **batch).item() == loss_before.item()


def test_bf16_stored_weights_train_exactly_as_autocast_over_fp32_weights(tiny_generator_dir):
    """The frozen linear weights stored in bf16 give the same loss and adapter gradients
    as bf16 autocast casting fp32 weights at each pass; the adapter, the tied embedding and
    the norms stay fp32."""
    results = []
    for bf16_weights in (False, True):
        generator = Generator(
            str(tiny_generator_dir), TINY_LORA, bf16=True, bf16_weights=bf16_weights
        )
        generator.prepare_for_training()
        assert generator.weights_in_bf16 == bf16_weights
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(2)
            for name, param in generator.model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.1)
        batch, _ = random_batch(prompt_lengths=(12, 7), target_lengths=(9, 14))
        with generator.autocast():
            loss = RALTLoss()(generator.model, **batch)
        loss.backward()
        grads = [p.grad.clone() for p in generator.trainable_parameters()]
        results.append((generator, loss.item(), grads))
    (plain, plain_loss, plain_grads), (stored, stored_loss, stored_grads) = results
    assert stored_loss == plain_loss
    assert len(stored_grads) == len(plain_grads)
    assert all(torch.equal(a, b) for a, b in zip(stored_grads, plain_grads))
    dtypes = {name: p.dtype for name, p in stored.model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    base_linear = [n for n in dtypes if n.endswith("q_proj.base_layer.weight")]
    assert base_linear and all(dtypes[n] == torch.bfloat16 for n in base_linear)
    assert stored.model.get_input_embeddings().weight.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in stored.adapter_state_dict().values())
    assert not plain.bf16_weights and all(
        d == torch.float32 for d in (p.dtype for p in plain.model.parameters())
    )


def test_bf16_stored_weights_are_not_used_without_autocast(tiny_generator_dir):
    generator = Generator(str(tiny_generator_dir), TINY_LORA, bf16=False, bf16_weights=True)
    generator.prepare_for_training()
    assert not generator.bf16_weights and not generator.weights_in_bf16
    assert all(p.dtype == torch.float32 for p in generator.model.parameters())


def test_only_training_stores_the_weights_in_bf16_and_answers_follow(tiny_rag, tiny_qa):
    """A process that only answers keeps fp32 weights; a trainer's first pass switches to
    bf16 weights, and answers after it are generated under bf16 autocast."""
    generator = tiny_rag.generator
    generator.bf16 = generator.bf16_weights = True  # the fixture's is fp32: as on a bf16 CPU
    tiny_rag.query(tiny_qa[0]["query"])
    assert not generator.weights_in_bf16
    assert all(p.dtype == torch.float32 for p in generator.model.parameters())
    HuggingFaceTrainerForRALT(tiny_rag, tiny_qa[:2], epochs=1, progress=False).train()
    assert generator.weights_in_bf16
    dtypes = {n: p.dtype for n, p in generator.model.named_parameters()}
    assert any(d == torch.bfloat16 for d in dtypes.values())
    assert all(d == torch.float32 for n, d in dtypes.items() if "lora_" in n)
    assert tiny_rag.query(tiny_qa[0]["query"]).answer is not None
    batch, _ = random_batch(prompt_lengths=(12, 7), target_lengths=(9, 14))
    with pytest.raises(RuntimeError, match="generator.autocast"):
        RALTLoss()(generator.model, **batch)  # bf16 weights outside autocast: a clear error
    with generator.autocast():
        assert torch.isfinite(RALTLoss()(generator.model, **batch))


def test_generation_uses_the_adapter(tiny_generator_dir):
    generator = tiny_generator(tiny_generator_dir, bf16=False)
    prompts = [generator.tokenizer("Question: why is the sky blue?")["input_ids"]]
    with_adapter = generator.generate(prompts, max_new_tokens=12)
    with generator.model.disable_adapter():
        without = generator.model.generate(
            input_ids=torch.tensor(prompts),
            max_new_tokens=12,
            do_sample=False,
            pad_token_id=generator.tokenizer.pad_token_id,
        )
    text = generator.tokenizer.decode(without[0, len(prompts[0]) :], skip_special_tokens=True)
    assert with_adapter[0] != text.strip()


def test_frozen_a_stays_frozen_after_the_adapter_is_switched_off_and_on(tiny_generator_dir):
    """PEFT marks every adapter parameter trainable again when adapters are re-enabled
    (generation switches them off and on); the parameters handed to an optimizer must still
    be B's alone, and A must get no gradient."""
    lora = dataclasses.replace(TINY_LORA, train_a=False)
    generator = Generator(str(tiny_generator_dir), lora, bf16=False)
    names = {id(p): n for n, p in generator.model.named_parameters()}
    prompts = [generator.tokenizer("Question: why?")["input_ids"]]
    generator.generate(prompts, max_new_tokens=2)  # disable_adapter() and back
    trainable = generator.trainable_parameters()
    assert trainable and all(".lora_B." in names[id(p)] for p in trainable)
    a_matrices = [p for n, p in generator.model.named_parameters() if ".lora_A." in n]
    assert len(a_matrices) == len(trainable)  # one A per B: half the adapter trains
    batch, _ = random_batch(prompt_lengths=(12, 7), target_lengths=(9, 14))
    RALTLoss()(generator.model, **batch).backward()
    assert all(p.grad is None for p in a_matrices)
    assert all(p.grad is not None for p in trainable)


def test_fedrag_bf16_forces_the_autocast_choice_and_names_a_bad_value(
    tiny_generator_dir, monkeypatch
):
    from fedrag_flower.rag.precision import cpu_supports_bf16

    monkeypatch.setenv("FEDRAG_BF16", "0")  # the fp32 path of a CPU without native bf16
    assert cpu_supports_bf16() is False
    generator = Generator(str(tiny_generator_dir), TINY_LORA)
    assert generator.bf16 is False and generator.bf16_weights is False
    monkeypatch.setenv("FEDRAG_BF16", "1")
    assert cpu_supports_bf16() is True
    assert Generator(str(tiny_generator_dir), TINY_LORA).bf16 is True
    monkeypatch.setenv("FEDRAG_BF16", "yes")
    with pytest.raises(ValueError, match="FEDRAG_BF16 must be 0 or 1"):
        cpu_supports_bf16()
