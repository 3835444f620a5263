"""Every tutorial and exercise of the course, declared once: names, signatures, points.

An exercise is declared by its name (what its answer cell defines, and that cell's grade
id), its signature and its points; the self-check is ``check_<name>`` in
``helpers.checks.<topic>``, where the topic is the tutorial's id without its number
(``06_causal_mask_trick`` -> ``causal_mask_trick``). The notebooks' messages ("finish
Exercise 2 first") number exercises from here, and the course's grader checks every place
an exercise lives against this file and names each one that disagrees.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Exercise:
    """One autograded exercise: the answer cell defines ``name`` with this ``signature``."""

    name: str
    signature: str  # parameters as written, without annotations; a class: its __init__
    points: int
    methods: dict[str, str] = field(default_factory=dict)  # a class: method -> parameters

    @property
    def check(self) -> str:
        """The name of its self-check in ``helpers.checks.<topic>``."""
        return f"check_{self.name}"

    @property
    def hidden_test(self) -> str:
        """The name of the grader's test of it."""
        return f"grade_{self.name}"

    @property
    def test_cell(self) -> str:
        """The grade id of its autograded test cell."""
        return f"test_{self.name}"


@dataclass(frozen=True)
class Tutorial:
    """One notebook: its exercises and its Think! questions (grade id -> points)."""

    id: str
    exercises: tuple[Exercise, ...]
    think: dict[str, int]

    @property
    def topic(self) -> str:
        """The id without its number: the name of the tutorial's modules."""
        return self.id.split("_", 1)[1]

    @property
    def number(self) -> int:
        return int(self.id.split("_", 1)[0])

    @property
    def points(self) -> int:
        return sum(e.points for e in self.exercises) + sum(self.think.values())


TUTORIALS: tuple[Tutorial, ...] = (
    Tutorial("01_gain_multiplication", (
        Exercise("stable_softmax", "x, dim=-1", 2),
        Exercise("gained_dot_product_attention", "x, q_1, q_2, z_1, z_2", 2),
    ), think={"think_fixed_vs_gain": 1, "think_equal_gains": 1}),
    Tutorial("02_qkv_attention", (
        Exercise("scaled_dot_product_attention", "Q, K, V, mask=None", 2),
        Exercise("make_batch", "N, T=10", 2),
        Exercise("SingleQueryAttention", "d_embed=16, d_att=16, d_hidden=32", 3,
                 methods={"attention": "e", "values": "e", "forward": "x"}),
    ), think={"think_single_query": 1, "think_ties": 1}),
    Tutorial("03_multi_head_attention", (
        Exercise("split_heads", "x, n_heads", 2),
        Exercise("merge_heads", "x", 2),
        Exercise("MultiHeadSelfAttention", "d_model, n_heads", 3,
                 methods={"forward": "x, mask=None"}),
    ), think={"think_one_head": 1, "think_head_symmetry": 1}),
    Tutorial("04_transformer_block", (
        Exercise("sinusoidal_positional_encoding", "T, d_model", 2),
        Exercise("TransformerBlock", "d_model, n_heads, d_ff, dropout=0.0", 3,
                 methods={"forward": "x, padding_mask=None"}),
        Exercise("mean_pool", "h, padding_mask=None", 2),
    ), think={"think_pooling_padding": 1, "think_decoding_complexity": 1}),
    Tutorial("05_sparse_and_inductive_bias", (
        Exercise("sparse_and_dataset", "m, T, idx, p=None", 2),
        Exercise("SelfAttentionClassifier", "T, d=8", 3, methods={"forward": "x"}),
    ), think={"think_why_attention_generalises": 1, "think_dense_targets": 1,
              "think_rule_routing": 1}),
    Tutorial("06_causal_mask_trick", (
        Exercise("running_mean_loop", "x", 2),
        Exercise("running_mean_matmul", "x", 2),
        Exercise("causal_attention_weights", "scores", 2),
        Exercise("CausalSelfAttentionHead", "n_embd, head_size", 3, methods={"forward": "x"}),
    ), think={"think_chicken_or_beef": 1, "think_no_mask": 1}),
    Tutorial("07_generation_and_cost", (
        Exercise("sample_next_token", "logits, temperature=1.0, top_k=None, generator=None", 2),
        Exercise("cached_attention_step", "q, k_new, v_new, cache=None", 3),
        Exercise("online_softmax", "x, block_size", 2),
        Exercise("blockwise_attention", "Q, K, V, block_size, causal=False", 3),
    ), think={"think_online_softmax_exact": 1, "think_cache_memory": 1}),
    Tutorial("08_beyond_words", (
        Exercise("patchify", "images, patch_size", 2),
        Exercise("PatchEmbedding", "patch_size, in_channels, d_model, n_patches", 3,
                 methods={"forward": "images"}),
        Exercise("sequence_log_prob", "logits, tokens", 2),
    ), think={"think_positions_vs_convolution": 1, "think_whose_language": 1,
              "think_what_preference_shows": 1}),
)


def tutorial(notebook_id: str) -> Tutorial:
    """The declared tutorial with this id."""
    for declared in TUTORIALS:
        if declared.id == notebook_id:
            return declared
    known = ", ".join(t.id for t in TUTORIALS)
    raise KeyError(f"{notebook_id!r} is not declared in helpers/syllabus.py (declared: {known})")


def ids() -> list[str]:
    """The assignment ids, in course order."""
    return [t.id for t in TUTORIALS]
