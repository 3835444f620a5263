"""A torch.Generator travels to the student's code as its state, and moves on with what
the student's code draws from it, as it would in one process."""

from __future__ import annotations

import json

import pytest
import torch

from kernel_protocol import in_kernel
from kernel_protocol.grader_side import decode, encode, student


def draw(generator=None):
    return torch.rand(5, generator=generator)


def test_a_generator_arrives_in_the_same_state():
    for keyword in (False, True):
        sent = torch.Generator().manual_seed(3)
        torch.rand(2, generator=sent)  # not at its seed any more: the state travels, not the seed
        expected = torch.rand(5, generator=sent.clone_state())
        got = student(draw)(generator=sent) if keyword else student(draw)(sent)
        assert torch.equal(got, expected)


def test_the_senders_generator_moves_on_with_the_students_draws():
    sent, local = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    first, second = student(draw)(sent), student(draw)(sent)
    assert torch.equal(torch.cat([first, second]), torch.rand(10, generator=local))
    assert torch.equal(sent.get_state(), local.get_state())


def test_a_reported_generator_state_is_checked():
    """The kernel's report of where a generator stands is strictly parsed: a state for an
    argument that is no generator, or of the wrong size, is a protocol error."""
    from kernel_protocol.grader_side import ProtocolError, advance_generators

    generator = torch.Generator().manual_seed(0)
    good = {"tensor": in_kernel.tensor_spec(generator.get_state())}
    bad = {"tensor": in_kernel.tensor_spec(torch.zeros(3, dtype=torch.uint8))}
    advance_generators({"generators": {"args[0]": good}}, (generator,), {})
    for states, args in (({"args[0]": good}, (1,)), ({"args[0]": bad}, (generator,)),
                         ({"args[1]": good}, (generator,)), ([good], (generator,))):
        with pytest.raises(ProtocolError):
            advance_generators({"generators": states}, args, {})


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
