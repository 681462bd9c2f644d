"""The generator's precision paths: bf16 copies of the frozen weights for training and
scoring, and generation that folds the adapter in and puts the weights back exactly."""

from __future__ import annotations

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


def test_bf16_copies_give_the_same_loss_and_gradients_as_plain_autocast(tiny_generator_dir):
    generator = tiny_generator(tiny_generator_dir, bf16=True)
    batch, _ = random_batch(prompt_lengths=(12, 7), target_lengths=(9, 14))
    params = generator.trainable_parameters()
    with generator.autocast():  # bf16 copies in place
        copies = RALTLoss()(generator.model, **batch)
    copies_grads = torch.autograd.grad(copies, params)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 weights cast at each product
        plain = RALTLoss()(generator.model, **batch)
    plain_grads = torch.autograd.grad(plain, params)
    assert copies.item() == plain.item()
    for a, b in zip(copies_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # outside the context the model holds its fp32 weights again
    dtypes = {p.dtype for p in generator.model.parameters()}
    assert dtypes == {torch.float32}


def test_bf16_copies_are_only_of_frozen_weights(tiny_generator_dir):
    generator = tiny_generator(tiny_generator_dir, bf16=True)
    with generator.autocast():
        by_kind = {("lora_" in name, p.dtype) for name, p in generator.model.named_parameters()}
    assert (True, torch.float32) in by_kind  # the adapter trains in fp32
    assert (True, torch.bfloat16) not in by_kind
    assert (False, torch.bfloat16) in by_kind


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
