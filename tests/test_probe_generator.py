"""A torch.Generator travels to the student's code as its state, and nothing else."""

from __future__ import annotations

import json

import pytest
import torch

from kernel_protocol import in_kernel
from kernel_protocol.grader_side import decode, encode, student


def draw(generator=None):
    return torch.rand(5, generator=generator)


def test_a_generator_arrives_in_the_same_state():
    sent = torch.Generator().manual_seed(3)
    torch.rand(2, generator=sent)  # not at its seed any more: the state travels, not the seed
    expected = torch.rand(5, generator=sent.clone_state())
    got = student(draw)(sent)
    assert torch.equal(got, expected)
    assert torch.equal(student(draw)(generator=sent), expected)  # as a keyword too


def test_the_senders_generator_is_not_advanced():
    sent = torch.Generator().manual_seed(4)
    state = sent.get_state()
    student(draw)(sent)
    assert torch.equal(sent.get_state(), state)


def test_a_generator_is_sent_as_a_plain_uint8_state():
    encoded = encode(torch.Generator().manual_seed(0))
    assert set(encoded) == {"generator"} and encoded["generator"]["dtype"] == "uint8"
    json.dumps(encoded)  # plain data


def test_a_malformed_generator_state_is_an_error_reply():
    bad = {"op": "call", "target": "draw", "args": [{"generator": in_kernel.tensor_spec(
        torch.zeros(3, dtype=torch.uint8))}], "kwargs": []}
    reply = json.loads(in_kernel.serve(json.dumps(bad), {"draw": draw}))
    assert "error" in reply


def test_a_generator_cannot_come_back_as_one():
    """The trusted side never rebuilds a generator from the student's reply."""
    reply = json.loads(in_kernel.serve(json.dumps({"op": "call", "target": "make", "args": [],
                                               "kwargs": []}), {"make": torch.Generator}))
    assert repr(decode(reply["ok"]["value"])) == "<a Generator object>"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU generator")
def test_only_cpu_generators_can_be_sent():
    with pytest.raises(TypeError, match="CPU"):
        encode(torch.Generator(device="cuda"))
