"""Unit tests of tutorial 09's demos (fast, no kernel)."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

matplotlib.use("Agg")

from helpers.demos import your_own_gpt as demo  # noqa: E402


# Test-local stand-ins (the demos take the student's model and generate as arguments).
class TableLM(nn.Module):
    """Logits from a table by previous token, with the GPT's interface and a counting cache."""

    def __init__(self, vocab_size: int = 5, seed: int = 0) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(vocab_size, vocab_size,
                                              generator=torch.Generator().manual_seed(seed)))

    def forward(self, tokens, caches=None):
        t = 0 if caches is None else caches[0][0].shape[2]
        K = torch.zeros(tokens.shape[0], 1, t + tokens.shape[1], 1)
        return self.table[tokens], [(K, K)]


@torch.no_grad()
def greedy(model, prompt, n_tokens, temperature=1.0, top_k=None, generator=None,
           use_cache=True):
    tokens, caches = prompt, None
    for _ in range(n_tokens):
        if use_cache:
            logits, caches = model(tokens if caches is None else tokens[:, -1:], caches)
        else:
            logits, _ = model(tokens)
        tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens


def test_the_text_splits_in_order():
    data = torch.arange(100)
    train, held_out = demo.split_text(data, held_out=0.1)
    assert torch.equal(torch.cat([train, held_out]), data) and len(held_out) == 10
    with pytest.raises(ValueError, match="between 0 and 1"):
        demo.split_text(data, held_out=1.0)


def test_batches_are_random_windows_and_their_next_tokens():
    data = torch.arange(500)
    get_batch = demo.batch_sampler(data, block_size=8, batch_size=4, seed=3)
    inputs, targets = get_batch()
    assert inputs.shape == targets.shape == (4, 8)
    assert torch.equal(targets, inputs + 1)  # the text counts up: the next token is +1
    assert torch.equal(inputs[:, 1:], inputs[:, :-1] + 1)  # consecutive windows
    again = demo.batch_sampler(data, block_size=8, batch_size=4, seed=3)()[0]
    assert torch.equal(again, inputs) and not torch.equal(get_batch()[0], inputs)
    with pytest.raises(ValueError, match="more than 9 tokens"):
        demo.batch_sampler(torch.arange(9), block_size=8, batch_size=1)


def test_windows_score_every_character_once():
    data = torch.arange(50)
    inputs, targets = demo.windows(data, block_size=7)
    assert inputs.shape == (7, 7) and torch.equal(inputs.flatten(), data[:49])
    assert torch.equal(targets, inputs + 1)
    assert demo.windows(data, 7, max_windows=2)[0].shape == (2, 7)
    with pytest.raises(ValueError, match="more than 7 tokens"):
        demo.windows(torch.arange(7), 7)


def test_the_bigram_baseline():
    text, tokenizer = demo.load_sonnets()
    train, held_out = demo.split_text(tokenizer.encode(text))
    losses = demo.bigram_losses(train, held_out, tokenizer.vocab_size)
    assert round(losses["train"], 2) == 2.39 and round(losses["held_out"], 2) == 2.42
    cycle = torch.arange(4).repeat(200)  # each token has one successor: nearly free
    assert demo.bigram_losses(cycle, cycle, 4)["train"] < 0.05
    noise = torch.randint(4, (20_000,), generator=torch.Generator().manual_seed(0))
    assert abs(demo.bigram_losses(noise, noise, 4)["held_out"] - math.log(4)) < 0.01


def test_mean_loss_of_a_uniform_model_is_log_v_and_keeps_the_mode():
    model = TableLM(vocab_size=6)
    with torch.no_grad():
        model.table.zero_()
    model.train()
    batch = demo.windows(torch.randint(6, (200,), generator=torch.Generator().manual_seed(1)), 9)
    assert abs(demo.mean_loss(model, batch, chunk=5) - math.log(6)) < 1e-6
    assert model.training


class Named(nn.Module):
    """The member names of the tutorial's GPT, with small layers."""

    def __init__(self) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(5, 4)
        self.position_embedding = nn.Embedding(3, 4)
        block = nn.Module()
        block.ln_1, block.ln_2 = nn.LayerNorm(4), nn.LayerNorm(4)
        block.attn = nn.Module()
        block.attn.to_keys = nn.Linear(4, 4, bias=False)
        block.mlp = nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Linear(16, 4))
        self.blocks = nn.ModuleList([block])
        self.ln_f = nn.LayerNorm(4)
        self.head = nn.Linear(4, 5)


def test_parameter_counts_group_by_part():
    model = Named()
    counts = demo.parameter_counts(model)
    assert counts == {"token_embedding": 20, "position_embedding": 12, "norms": 24,
                      "attention": 16, "MLP": 148, "head": 25}
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())


def test_the_timer_counts_one_call_per_token_and_the_tokens_agree():
    model = TableLM()
    prompt = torch.tensor([[1, 2]])
    times = demo.time_generation(greedy, model, prompt, n_tokens=16)
    assert times.same_tokens and len(times.with_cache) == len(times.without_cache) == 16
    assert (times.with_cache >= 0).all() and (times.without_cache >= 0).all()
    assert list(times.positions) == list(range(2, 18))
    positions, without, cached = demo.binned(times, bins=4)
    assert positions.tolist() == [3.5, 7.5, 11.5, 15.5] and without.shape == cached.shape == (4,)
    demo.plot_generation_times(times, bins=4)
    median = demo.quarters(times)
    assert median["without, first"] == float(np.median(times.without_cache[:4]))
    assert median["with, last"] == float(np.median(times.with_cache[-4:]))

    def twice(model, prompt, n_tokens, **kwargs):
        for _ in range(2):
            out = greedy(model, prompt, n_tokens, **kwargs)
        return out

    with pytest.raises(ValueError, match="called the model 8 times for 4 tokens"):
        demo.time_generation(twice, model, prompt, n_tokens=4)


def test_the_timer_passes_the_caches_on():
    timer = demo.StepTimer(TableLM())
    logits, caches = timer(torch.tensor([[0, 1, 2]]))
    _, longer = timer(torch.tensor([[3]]), caches)
    assert logits.shape == (1, 3, 5) and longer[0][0].shape[2] == 4
    assert len(timer.starts) == 2 and timer.starts[0] <= timer.starts[1]


def test_the_figures_draw():
    text, tokenizer = demo.load_sonnets()
    train = tokenizer.encode(text)
    model = TableLM(vocab_size=tokenizer.vocab_size).train()
    demo.plot_cache_masks(t=3, T=2)
    demo.plot_gelu()
    demo.draw_gpt(n_layers=3)
    demo.plot_next_character(model, tokenizer, "Shall I", train)
    assert model.training  # the figure evaluates, and leaves the mode as it was
    demo.plot_training([4.0, 3.0, 2.5] * 5, {"uniform": math.log(62), "bigram": 2.4},
                       held_out=2.5)
    demo.plot_work(prompt_length=3, n_tokens=5)


def test_samples_print_under_their_titles(capsys):
    demo.print_samples({"greedy": "the the", "sampled": "thy"}, width=20)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("--- greedy ") and printed[1] == "the the"
    assert printed[2].startswith("--- sampled ") and printed[-1] == "-" * 20
    assert np.all([len(line) == 20 for line in (printed[0], printed[2])])


def test_the_trained_weights_fit_the_solutions_gpt_and_beat_the_bigram():
    """The shipped weights (bench/gpt_long_run.py) give the solution's GPT the held-out loss
    the notebook states, and a model of other sizes or names gets a plain error."""
    from notebook_code import solution_namespace

    gpt = solution_namespace("09_your_own_gpt")["GPT"]
    text, tokenizer = demo.load_sonnets()
    _, held_out = demo.split_text(tokenizer.encode(text), held_out=0.1)
    model = demo.load_trained(gpt(tokenizer.vocab_size, 64, 32, 4, 2))
    assert not model.training
    assert abs(demo.mean_loss(model, demo.windows(held_out, 64)) - 1.78) < 0.01
    with pytest.raises(ValueError, match="notebook's sizes"):
        demo.load_trained(gpt(tokenizer.vocab_size, 64, 48, 4, 2))
    with pytest.raises(ValueError, match="member names"):
        demo.load_trained(TableLM())
    assert demo.TRAINED_WEIGHTS.stat().st_size < 200 * 1024  # small enough to ship
