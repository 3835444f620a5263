"""A student's module is rebuilt on the grader's side from its description; data-less (meta)
tensors cost the kernel nothing, but the hidden tests fill or randomise every parameter
here. A description asking for more numbers than any answer needs is refused, fast."""

from __future__ import annotations

import pytest
import torch
from notebook_code import solution_namespace
from torch import nn

from hidden_tests.transformer_block import grade_TransformerBlock

Block = solution_namespace("04_transformer_block")["TransformerBlock"]


class Hoarder(Block):
    """The right block, plus data-less parameters of 250 million numbers each."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for i in range(4):
            self.register_parameter(f"junk{i}", nn.Parameter(torch.empty(250_000_000,
                                                                         device="meta")))


def test_a_module_of_huge_meta_parameters_is_refused_before_any_work():
    with pytest.raises(Exception, match="any answer of this course needs"):
        grade_TransformerBlock(Hoarder)


def test_the_right_block_is_within_the_budget():
    grade_TransformerBlock(Block)
