"""The generator's generation path: the adapter is folded into the base weights for
decoding, and the weights are put back exactly afterwards."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedrag_flower.losses.ralt import RALTLoss
from fedrag_flower.rag.generator import Generator
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
    with torch.no_grad():
        loss_before = RALTLoss()(generator.model, **batch)
    prompts = [generator.tokenizer("Question: why?")["input_ids"]] * 2
    answers = generator.generate(prompts, max_new_tokens=6)
    assert len(answers) == 2
    after = generator.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert RALTLoss()(generator.model, **batch).item() == loss_before.item()


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
