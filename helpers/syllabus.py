"""Every tutorial and exercise of the course, declared once: names, signatures, points,
and the contract each answer is held to.

An exercise is declared by its name (what its answer cell defines, and that cell's grade
id), its signature and its points; the self-check is ``check_<name>`` in
``helpers.checks.<topic>``, where the topic is the tutorial's id without its number
(``06_causal_mask_trick`` -> ``causal_mask_trick``). The notebooks' messages ("finish
Exercise 2 first") number exercises from here, and the course's grader checks every place
an exercise lives against this file and names each one that disagrees.

Its **contract** lists the clauses the exercise text states, each with the words a student
sees when an answer breaks it. Every clause has a check in the self-check and in the
hidden test, and a wrong answer in the test banks that breaks that clause alone
(``tests/test_contracts.py``). **Rules** say how to build the answer (no built-in that
does the work, no Python loop); the self-check holds students to them, the grade does not
(a kernel's report of how it computed is its own word, see the README's trust model).
**Layers** are the members the text prescribes as PyTorch layers: only these are rebuilt
as PyTorch's own layers on the grader's side, everything else stays the student's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Clauses many exercises share, in the words students read.
UNCHANGED = "leaves its arguments unchanged (no `x -= ...`, `masked_fill_`, `x[...] = ...`)"
DTYPE = "the result has the input's dtype (float64 in, float64 out)"
DEVICE = "new tensors are made on the input's device (device=x.device, or torch.*_like)"
GRADIENTS = "in training mode, gradients reach every parameter (nothing detached)"
DEVICE_NO_COPY = (DEVICE + ", and no input is moved to the CPU (no `.cpu()`, `.numpy()`, "
                  "`.to(\"cpu\")`)")


@dataclass(frozen=True)
class Exercise:
    """One autograded exercise: the answer cell defines ``name`` with this ``signature``."""

    name: str
    signature: str  # parameters as written, without annotations; a class: its __init__
    points: int
    methods: dict[str, str] = field(default_factory=dict)  # a class: method -> parameters
    contract: dict[str, str] = field(default_factory=dict)  # clause -> what it requires
    rules: dict[str, str] = field(default_factory=dict)  # rule -> what it forbids (not graded)
    layers: dict[str, str] = field(default_factory=dict)  # member path -> "Linear|ReLU"...

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
    """One notebook: its exercises, its Think! questions (grade id -> points) and the answers
    to earlier exercises it needs, which students paste in (an ungraded answer cell
    ``pasted_<name>`` each, checked by that exercise's self-check)."""

    id: str
    exercises: tuple[Exercise, ...]
    think: dict[str, int]
    pasted: tuple[str, ...] = ()

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
        Exercise("stable_softmax", "x, dim=-1", 2, contract={
            "values": "equals the softmax of x along `dim`: non-negative, summing to 1",
            "dim": "works along any `dim` of a tensor of any shape, axes of size 1 (a batch of "
                   "one) kept; without `dim`, the last",
            "large": "exact and finite for logits in the thousands, in rising and in falling "
                     "rows, and in rows far below the others",
            "dtype": DTYPE,
            "device": DEVICE_NO_COPY,
            "unchanged": UNCHANGED,
        }, rules={"no_builtin": "torch.softmax (and F.softmax, Tensor.softmax, log_softmax) "
                                "is off limits",
                  "gradients": "the result stays connected to x for autograd (no "
                               "torch.no_grad(), .detach() or NumPy): later tutorials train "
                               "through it"}),
        Exercise("gained_dot_product_attention", "x, q_1, q_2, z_1, z_2", 2, contract={
            "returns": "returns the pair (w, y): w of shape (T,), y a 0-d tensor",
            "values": "w = softmax(z_1 q_1 + z_2 q_2) over the T positions and y = w · x",
            "gains": "each gain scales its own pattern, sign included: raising z_1 or z_2 "
                     "moves weight to where its own pattern is large",
            "large": "exact and finite for gains in the hundreds, positive or negative, on "
                     "either pattern",
            "dtype": DTYPE,
            "device": DEVICE_NO_COPY,
            "unchanged": UNCHANGED,
        }, rules={"gradients": "w and y stay connected to x, q_1 and q_2 for autograd (no "
                               "torch.no_grad(), .detach() or NumPy)"}),
    ), think={"think_fixed_vs_gain": 1, "think_equal_gains": 1}),
    Tutorial("02_qkv_attention", (
        Exercise("scaled_dot_product_attention", "Q, K, V, mask=None", 2, contract={
            "shape": "out (..., Tq, dv) and weights (..., Tq, Tk), for any leading "
                     "dimensions and Tq ≠ Tk; axes of size 1 (a batch of one, a single "
                     "query) are kept",
            "values": "weights = softmax(Q Kᵀ / sqrt(d_k)) over the keys, out = weights V",
            "mask": "mask True = may attend: forbidden pairs get weight exactly 0, the mask "
                    "broadcasts over the leading dimensions, a fully masked query gets zero "
                    "weights and a zero output",
            "large": "exact and finite for scores in the hundreds, in rows far above and "
                     "far below the others, and when a forbidden key scores far above the "
                     "allowed ones (the allowed weights still sum to 1)",
            "dtype": "the result has the input's dtype and precision (float64 in: computed "
                     "in float64, float64 out)",
            "device": DEVICE,
            "unchanged": UNCHANGED,
        }, rules={"no_builtin": "F.scaled_dot_product_attention (PyTorch's own attention) is "
                                "off limits",
                  "gradients": "nothing detached: gradients flow from out back to Q, K and V "
                               "(checked by the self-check; a model trained through it "
                               "needs them)"}),
        Exercise("make_batch", "N, T=10", 2, contract={
            "shape": "X of shape (N, T), y of shape (N, 1)",
            "dtype": "X is int64, y is float32",
            "values": "X holds digits 0-9 drawn uniformly; y is 1.0 exactly where a row has "
                      "strictly more 2s than 4s",
            "arguments": "N and T are both honoured (T shorter and longer than 10, every "
                         "position counted, a batch of one)",
            "randomness": "draws from PyTorch's global generator (the same seed gives the same "
                          "batch, from the first call on) and never reseeds it",
        }),
        Exercise("SingleQueryAttention", "d_embed=16, d_att=16, d_hidden=32", 3,
                 methods={"attention": "e", "values": "e", "forward": "x"}, contract={
            "members": "exactly embed, query (1, d_att), to_key, to_value and readout, as the "
                       "table says (the nn.Linear layers with their bias)",
            "init": "the query starts as torch.randn(1, d_att): standard normal entries",
            "arguments": "d_embed, d_att and d_hidden are each honoured; scores are scaled "
                         "by 1/sqrt(d_att)",
            "attention": "attention(e) is (N, 1, T) for any N, a batch of one included: the "
                         "softmax over the T positions of query · key / sqrt(d_att)",
            "values": "values(e) is (N, T, 1), one value per position (N = 1 too)",
            "forward": "forward(x) is (N, 1), a batch of one included: readout of the "
                       "attended value Σ w_t v_t",
            "randomness": "the parameters are drawn from PyTorch's global generator, never "
                          "reseeded: the same seed gives the same model, two seeds two models",
            "gradients": GRADIENTS,
            "unchanged": UNCHANGED,
        }, rules={"device": "a tensor you create inside is made on the input's device "
                            "(device=x.device, or torch.*_like; checked by the self-check)"},
            layers={"embed": "Embedding", "to_key": "Linear", "to_value": "Linear",
                   "readout": "Sequential", "readout.*": "Linear|Tanh|ReLU|Sigmoid"}),
    ), think={"think_single_query": 1, "think_ties": 1}),
    Tutorial("03_multi_head_attention", (
        Exercise("split_heads", "x, n_heads", 2, contract={
            "shape": "(B, T, H*dh) -> (B, H, T, dh)",
            "values": "head h holds columns h*dh to (h+1)*dh - 1 of every position",
            "arguments": "any n_heads that divides the width, 1 and the full width included, "
                         "and a batch of one",
            "dtype": DTYPE,
            "device": DEVICE,
            "unchanged": UNCHANGED,
        }, rules={"no_loop": "no Python loop over heads or positions",
                  "differentiable": "the result stays connected to x for autograd (no "
                                    ".detach(), no round trip through NumPy)"}),
        Exercise("merge_heads", "x", 2, contract={
            "shape": "(B, H, T, dh) -> (B, T, H*dh), one head and a batch of one included",
            "values": "the inverse of split_heads: head h goes back to columns h*dh onwards, "
                      "also for a non-contiguous (transposed) input",
            "dtype": DTYPE,
            "device": DEVICE,
            "unchanged": UNCHANGED,
        }, rules={"no_loop": "no Python loop over heads or positions",
                  "differentiable": "the result stays connected to x for autograd (no "
                                    ".detach(), no round trip through NumPy)"}),
        Exercise("MultiHeadSelfAttention", "d_model, n_heads", 3,
                 methods={"forward": "x, mask=None"}, contract={
            "members": "to_queries, to_keys, to_values (d_model -> d_model, bias=False) and "
                       "unify_heads (d_model -> d_model)",
            "init": "the four maps keep nn.Linear's default initialisation, drawn from "
                    "PyTorch's global generator, which the class never reseeds",
            "shape": "forward returns out (B, T, d_model) and weights (B, H, T, T), a batch "
                     "of one included",
            "values": "each head attends with scores scaled by 1/sqrt(d_model // n_heads); "
                      "unify_heads maps the merged heads",
            "mask": "mask True = may attend, broadcast over heads; a fully masked query gets "
                    "zero weights",
            "large": "exact and finite for inputs whose scores reach the hundreds, with and "
                     "without a mask",
            "arguments": "d_model and n_heads are honoured (one head, one channel per head, "
                         "many heads)",
            "dtype": "a float64 layer given float64 x returns float64 out and weights",
            "device": DEVICE,
            "gradients": GRADIENTS + ", finite also when a query may attend to nothing",
            "unchanged": UNCHANGED,
        }, rules={"differentiable": "the gradient also reaches x, the layer's input (no "
                                    ".detach() or torch.no_grad() on x): the layers below "
                                    "it learn through it; the returned weights stay "
                                    "connected too",
                  "attributes": "d_head = d_model // n_heads is stored as a whole number"},
            layers={"to_queries": "Linear", "to_keys": "Linear", "to_values": "Linear",
                    "unify_heads": "Linear"}),
    ), think={"think_one_head": 1, "think_head_symmetry": 1}),
    Tutorial("04_transformer_block", (
        Exercise("sinusoidal_positional_encoding", "T, d_model", 2, contract={
            "shape": "a (T, d_model) float32 tensor (float64 works too, half precision does "
                     "not): one row per position, not (T, 1, d_model)",
            "values": "sin on even columns, cos on odd columns, pair i at frequency "
                      "10000^(-2i/d_model), positions from 0",
            "arguments": "any T (1 included, and hundreds of positions: no table cut at a "
                         "fixed maximum length) and any even d_model",
        }),
        Exercise("TransformerBlock", "d_model, n_heads, d_ff, dropout=0.0", 3,
                 methods={"forward": "x, padding_mask=None"}, contract={
            "members": "attention (nn.MultiheadAttention, batch_first=True), norm_1 and "
                       "norm_2 (two separate nn.LayerNorm(d_model), each with its own weights "
                       "and the default eps), mlp and "
                       "dropout as the text says, with the sizes and the dropout probability "
                       "passed in",
            "values": "post-norm: h = norm_1(x + attention(x)), out = norm_2(h + mlp(h)), "
                      "one (B, T, d_model) tensor, for a batch of one too",
            "padding": "padding_mask (B, T), True = padding, reaches the attention as "
                       "key_padding_mask, in training mode as in eval mode, passed by keyword "
                       "or by position",
            "dropout": "in training mode, nn.Dropout(dropout) acts on each sub-layer's output "
                       "before its residual add, the same draws as self.dropout there (with "
                       "dropout=1 the block returns norm_2(norm_1(x))), "
                       "each output with its own mask, drawn afresh on every call; in eval "
                       "mode it does nothing",
            "device": "runs where its weights and x are: padding_mask stays on its device "
                      "(no `.cpu()`), and no tensor is made on the CPU",
            "gradients": GRADIENTS,
            "unchanged": UNCHANGED,
        }, layers={"attention": "MultiheadAttention", "norm_1": "LayerNorm",
                   "norm_2": "LayerNorm", "mlp": "Sequential", "mlp.0": "Linear",
                   "mlp.1": "ReLU", "mlp.2": "Linear", "dropout": "Dropout"}),
        Exercise("mean_pool", "h, padding_mask=None", 2, contract={
            "shape": "(B, T, d) -> (B, d), a batch of one included",
            "values": "without a mask, the mean over the T positions",
            "padding": "with a mask (True = padding), the mean over the real positions only, "
                       "wherever the padding lies",
            "dtype": "the result has h's dtype (float64 in, float64 out; bfloat16 in, "
                     "bfloat16 out)",
            "device": DEVICE,
            "unchanged": UNCHANGED,
        }, rules={"gradients": "nothing detached: gradients flow from the result back to h "
                               "(no torch.no_grad(), .detach() or NumPy inside; checked by the "
                               "self-check, not graded)"}),
    ), think={"think_pooling_padding": 1, "think_decoding_complexity": 1}),
    Tutorial("05_sparse_and_inductive_bias", (
        Exercise("sparse_and_dataset", "m, T, idx, p=None", 2, contract={
            "shape": "X of shape (m, T), y of shape (m, 1), a single sample (m = 1) included",
            "dtype": "X is int64 bits, y is float32",
            "values": "y is 1.0 exactly when every bit at the positions in idx is 1",
            "arguments": "each bit is 1 with probability p, an explicit p used as given "
                         "(p=0 included); p=None means 0.5 ** (1 / len(idx))",
            "randomness": "draws from PyTorch's global generator and never reseeds it: the "
                          "same seed gives the same data, another seed other data, and two "
                          "calls in a row two different data sets",
            "unchanged": "leaves idx as it was given: a list keeps its order (no idx.sort()), "
                         "and a tuple works as well as a list",
        }),
        Exercise("SelfAttentionClassifier", "T, d=8", 3, methods={"forward": "x"}, contract={
            "members": "token_embedding (2, d), position_embedding (T, d) an nn.Parameter, "
                       "query, key, value (bias=False, three separate layers) and readout "
                       "(with bias) as the table says, float32 parameters",
            "randomness": "draws its initial weights from PyTorch's global generator and "
                          "never reseeds it: the same seed builds the same model, another seed "
                          "another one, two builds in a row two different models, and the "
                          "draws after a build still follow the seed",
            "init": "token_embedding, position_embedding, query, key and value drawn from a "
                    "normal with mean 0 and std 0.1 for every d; readout (weight and bias) "
                    "keeps PyTorch's default",
            "embed": "embed(x) is token_embedding(x) + position_embedding, shape (B, T, d)",
            "attention": "attention_weights(x) is (B, T, T): row i is the softmax over the "
                         "keys of Q_i Kᵀ / sqrt(d), large scores included",
            "forward": "forward(x) is sigmoid(readout(h)) with h = Σ_t A[T-1, t] V_t, shape "
                       "(B, 1), a batch of one included; no dropout anywhere (the checks run "
                       "the model in training mode)",
            "arguments": "T and d are honoured (the scale is 1/sqrt(d) for every d)",
            "device": "new tensors are made on x's device (device=x.device)",
            "gradients": GRADIENTS,
        }, layers={"token_embedding": "Embedding", "query": "Linear", "key": "Linear",
                   "value": "Linear", "readout": "Linear"}),
    ), think={"think_why_attention_generalises": 1, "think_dense_targets": 1,
              "think_rule_routing": 1}),
    Tutorial("06_causal_mask_trick", (
        Exercise("running_mean_loop", "x", 2, contract={
            "shape": "(B, T, C) -> (B, T, C), a batch of one included",
            "values": "row t is the mean of rows 0..t (t + 1 of them), for every sequence, a "
                      "sequence of one token included",
            "dtype": DTYPE,
            "device": DEVICE,
            "unchanged": UNCHANGED,
        }, rules={"loops": "the direct way, with a Python loop over the positions: the slow "
                           "reference Exercise 2 is timed against (checked by the self-check; "
                           "not graded)"}),
        Exercise("running_mean_matmul", "x", 2, contract={
            "shape": "(B, T, C) -> (B, T, C), a batch of one included",
            "values": "row t is the mean of rows 0..t (t + 1 of them), for every sequence, a "
                      "sequence of one token included",
            "dtype": "the weight matrix and the result have the input's dtype (float64 in, "
                     "float64 out)",
            "device": "the weight matrix is made on the input's device (device=x.device)",
            "unchanged": UNCHANGED,
        }, rules={"one_product": "one matrix product of a (T, T) weight matrix with x, no "
                                 "Python loop (checked by the self-check; not graded)"}),
        Exercise("causal_attention_weights", "scores", 2, contract={
            "shape": "(..., T, T) -> (..., T, T), any leading dimensions (none included)",
            "values": "row t is the softmax of scores[..., t, :t+1] over the keys; later "
                      "positions get weight exactly 0",
            "large": "finite and exact for scores in the hundreds and far beyond, also when "
                     "every allowed score lies far below the future ones: the future becomes "
                     "-inf (or the dtype's lowest number), not a large finite number",
            "dtype": DTYPE,
            "device": DEVICE,
            "unchanged": UNCHANGED,
        }),
        Exercise("CausalSelfAttentionHead", "n_embd, head_size", 3, methods={"forward": "x"},
                 contract={
            "members": "key, query, value: nn.Linear(n_embd, head_size, bias=False)",
            "init": "key, query and value keep nn.Linear's own random start, drawn from "
                    "PyTorch's global generator: never reseeded, never zeroed",
            "randomness": "neither __init__ nor forward reseeds PyTorch's global generator "
                          "(no torch.manual_seed inside)",
            "causal": "position t never reads a later position",
            "values": "causal softmax(q kᵀ / sqrt(head_size)) times v, shape "
                      "(B, T, head_size), a batch of one included",
            "length": "works for any sequence length T, 1 and long ones included (no mask "
                      "of a fixed size made in __init__)",
            "arguments": "n_embd and head_size are honoured (head_size ≠ n_embd too)",
            "device": "new tensors (a mask) are made on x's device (device=x.device, or "
                      "torch.*_like)",
            "gradients": GRADIENTS,
            "unchanged": UNCHANGED,
        }, layers={"key": "Linear", "query": "Linear", "value": "Linear"}),
    ), think={"think_chicken_or_beef": 1, "think_no_mask": 1}),
    Tutorial("07_generation_and_cost", (
        Exercise("sample_next_token", "logits, temperature=1.0, top_k=None, generator=None", 2,
                 contract={
            "shape": "one int64 token id per row: shape (B,), a batch of one included",
            "distribution": "each token is an independent draw from the softmax of its row",
            "temperature": "any temperature > 0 divides the logits, a small one too (logits / "
                           "temperature in the thousands); temperature <= 0 raises a "
                           "ValueError whose message names the temperature",
            "top_k": "with top_k (any k, 1 included), only the k largest logits of each row "
                     "can be drawn",
            "randomness": "with a generator, draws from its current state alone (the same "
                          "state gives the same tokens, whatever the global seed; seeds and "
                          "states that differ give other tokens); without one, from the "
                          "global generator (the same seed gives the same tokens, two seeds "
                          "different ones); never reseeds",
            "device": DEVICE,
            "unchanged": UNCHANGED,
        }),
        Exercise("cached_attention_step", "q, k_new, v_new, cache=None", 3, contract={
            "cache": "returns the cache with the new key and value last, length t + 1 (just "
                     "the new entry when cache is None)",
            "values": "out is the attention of q over all t + 1 keys, scaled by 1/sqrt(d_h)",
            "shape": "out (B, H, 1, d_h), cache tensors (B, H, t + 1, d_h), B = H = 1 "
                     "included",
            "dtype": DTYPE + ", bfloat16 too, with cache=None too",
            "device": DEVICE + ", with cache=None too",
            "unchanged": "leaves its arguments unchanged, the old cache included (the new "
                         "cache is a new tensor: torch.cat, never a write into K or V)",
        }),
        Exercise("online_softmax", "x, block_size", 2, contract={
            "values": "equals torch.softmax(x, dim=-1) for finite x of any shape",
            "blocks": "goes over the row in blocks of block_size (its work grows with the "
                      "number of blocks); any block_size, also one that does not divide the "
                      "row, or exceeds it, on rows of any length",
            "falling": "exact and finite when a row's maximum comes first and the values then "
                       "fall by hundreds (a running maximum that never decreases, the sum "
                       "rescaled by exp(m - m'))",
            "large": "finite for logits in the thousands",
            "rising": "exact and finite when a row rises by hundreds after its first block "
                      "(the running maximum grows with it, and the final e^(x - m) uses the "
                      "maximum of the whole row)",
            "dtype": DTYPE + ", bfloat16 too",
            "device": DEVICE,
            "unchanged": UNCHANGED,
        }),
        Exercise("blockwise_attention", "Q, K, V, block_size, causal=False", 3, contract={
            "values": "equals F.scaled_dot_product_attention(Q, K, V) (scaled by 1/sqrt(d)), "
                      "also for scores in the hundreds, positive or negative",
            "causal": "causal=True: query i reads keys 0..i, also when Tq ≠ Tk",
            "blocks": "goes over the keys in blocks of block_size (its work grows with the "
                      "number of blocks); any Tk (in the hundreds too) and block_size, not "
                      "only multiples",
            "shape": "out (..., Tq, dv), any leading dimensions, dv ≠ d",
            "dtype": DTYPE + ", bfloat16 too",
            "device": DEVICE,
            "unchanged": UNCHANGED,
        }, rules={"memory": "never a tensor with Tq x Tk entries: none larger than a block "
                            "of scores (Tq x block_size), K itself or the running output o "
                            "(Tq x dv) (checked by the self-check; not graded)"}),
    ), think={"think_online_softmax_exact": 1, "think_cache_memory": 1}),
    Tutorial("08_beyond_words", (
        Exercise("patchify", "images, patch_size", 2, contract={
            "shape": "(B, C, H, W) -> (B, N, C*p*p) with N = (H/p)·(W/p), a batch of one "
                     "included",
            "values": "patch (i, j) flattened in (channel, row, column) order, patches in "
                      "row-major order",
            "arguments": "any patch size that divides H and W (1 and the whole image "
                         "included), any number of channels, H ≠ W",
            "dtype": DTYPE,
            "device": DEVICE,
            "unchanged": UNCHANGED,
        }),
        Exercise("PatchEmbedding", "patch_size, in_channels, d_model, n_patches", 3,
                 methods={"forward": "images"}, contract={
            "members": "proj (nn.Linear(C*p*p, d_model), with its bias), cls_token "
                       "(1, 1, d_model) and positions (1, n_patches + 1, d_model) parameters, "
                       "and no other parameters",
            "init": "cls_token and positions start as small random numbers from PyTorch's "
                    "global generator (e.g. 0.02 * torch.randn(...)): not zeros, root mean "
                    "square at most 0.1, no reseeding",
            "values": "the class token first, then proj of each patch in patchify's order, "
                      "positions added after the class token is prepended; computed afresh "
                      "at every call",
            "shape": "forward(images) returns (B, n_patches + 1, d_model), a batch of one "
                     "included",
            "arguments": "patch_size, in_channels, d_model and n_patches are each honoured "
                         "(several channels, d_model ≠ C·p·p, images that are not square)",
            "gradients": "in training mode, gradients reach proj, cls_token and positions "
                         "(nothing detached)",
            "device": "runs wherever the module and the images are (a GPU included): forward "
                      "makes no tensor on the CPU",
            "unchanged": UNCHANGED,
        }, layers={"proj": "Linear"}),
        Exercise("sequence_log_prob", "logits, tokens", 2, contract={
            "shape": "one number per sequence, shape (B,), a batch of one included",
            "values": "Σ over t = 0..T-2 of log softmax(logits[:, t])[tokens[:, t+1]], for "
                      "any T ≥ 2 and vocabulary size",
            "large": "finite and exact for logits in the hundreds and thousands: a model very "
                     "sure of the right token, or of a wrong one",
            "dtype": DTYPE,
            "device": "the result is on the logits' device and the code runs there (a GPU "
                      "included): tensors it makes need device=logits.device (a CPU index "
                      "tensor is fine: PyTorch moves it)",
            "unchanged": UNCHANGED,
        }),
    ), think={"think_positions_vs_convolution": 1, "think_whose_language": 1,
              "think_what_preference_shows": 1}),
    Tutorial("09_your_own_gpt", (
        Exercise("CausalSelfAttention", "d_model, n_heads", 3, methods={"forward": "x, cache=None"},
                 contract={
            "members": "to_queries, to_keys, to_values (nn.Linear(d_model, d_model, bias=False)) "
                       "and unify_heads (nn.Linear(d_model, d_model))",
            "shape": "forward returns (out, cache): out (B, T, d_model), the cache a pair (K, V) "
                     "of (B, n_heads, t + T, d_model // n_heads), for any n_heads that divides "
                     "d_model",
            "values": "without a cache: causal multi-head attention, scores scaled by "
                      "1/sqrt(d_model // n_heads), the heads merged and mapped by unify_heads; "
                      "the same in training mode (no dropout)",
            "cache": "the returned cache holds the keys and values of every position so far, "
                     "the new ones last (with cache=None, those of the T new positions)",
            "pieces": "with a cache of t positions, query i of the T new positions sees every "
                      "cached key and the new keys 0..i: a text fed in pieces gives the same "
                      "outputs as fed at once",
            "gradients": "in training mode, gradients reach every parameter, and the returned "
                         "cache carries them too (nothing detached)",
        }, layers={"to_queries": "Linear", "to_keys": "Linear", "to_values": "Linear",
                   "unify_heads": "Linear"}),
        Exercise("Block", "d_model, n_heads", 3, methods={"forward": "x, cache=None"}, contract={
            "members": "ln_1, ln_2 (nn.LayerNorm(d_model)), attn (your CausalSelfAttention) and "
                       "mlp (nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), "
                       "nn.Linear(4 * d_model, d_model)))",
            "returns": "forward returns the pair (x, cache), x of shape (B, T, d_model)",
            "values": "pre-norm: h = x + attn(ln_1(x)), then h + mlp(ln_2(h)); the same in "
                      "training mode (no dropout)",
            "cache": "the cache goes to attn, and attn's new cache comes back",
            "gradients": "in training mode, gradients reach every parameter, and back to x "
                         "along the residual stream as well as through the branches (nothing "
                         "detached)",
            "unchanged": UNCHANGED,
        }, layers={"ln_1": "LayerNorm", "ln_2": "LayerNorm", "mlp": "Sequential",
                   "mlp.0": "Linear", "mlp.1": "GELU", "mlp.2": "Linear",
                   "attn.to_queries": "Linear", "attn.to_keys": "Linear",
                   "attn.to_values": "Linear", "attn.unify_heads": "Linear"}),
        Exercise("GPT", "vocab_size, block_size, d_model, n_heads, n_layers", 3,
                 methods={"forward": "tokens, caches=None"}, contract={
            "members": "token_embedding (nn.Embedding(vocab_size, d_model)), position_embedding "
                       "(nn.Embedding(block_size, d_model)), blocks (an nn.ModuleList of n_layers "
                       "Blocks), ln_f (nn.LayerNorm(d_model)) and head (nn.Linear(d_model, "
                       "vocab_size)), its own weights, not the token embedding's",
            "returns": "forward returns (logits, caches): logits (B, T, vocab_size) and a list "
                       "of one cache per block, block i's at index i",
            "values": "logits = head(ln_f(x)) where x = token_embedding(tokens) + "
                      "position_embedding(positions) went through every block in order; the "
                      "same in training mode (no dropout)",
            "pieces": "with the caches of t positions, the new tokens sit at positions t..t+T-1 "
                      "and block i continues from caches[i]: a text fed in pieces gives the same "
                      "logits as fed at once",
            "gradients": "in training mode, gradients reach every parameter, the embeddings "
                         "along the residual stream of every block (nothing detached)",
        }, layers={"token_embedding": "Embedding", "position_embedding": "Embedding",
                   "blocks": "ModuleList", "blocks.*.ln_1": "LayerNorm",
                   "blocks.*.ln_2": "LayerNorm", "blocks.*.mlp": "Sequential",
                   "blocks.*.mlp.0": "Linear", "blocks.*.mlp.1": "GELU",
                   "blocks.*.mlp.2": "Linear", "blocks.*.attn.to_queries": "Linear",
                   "blocks.*.attn.to_keys": "Linear", "blocks.*.attn.to_values": "Linear",
                   "blocks.*.attn.unify_heads": "Linear", "ln_f": "LayerNorm",
                   "head": "Linear"}),
        Exercise("train_gpt", "model, get_batch, steps, lr=0.003", 3, contract={
            "returns": "a list of `steps` Python floats: each step's loss, before its update",
            "loss": "the cross-entropy of every position's logits against its target, "
                    "averaged over all B x T positions of the batch",
            "learns": "the loss falls: every step updates the model",
            "optimizer": "torch.optim.AdamW over the model's parameters with learning rate lr "
                         "(PyTorch's other defaults)",
            "steps": "each step continues from the one before: the gradients are cleared every "
                     "step (else they add up) and one AdamW, made once, keeps its running "
                     "averages",
            "randomness": "never reseeds PyTorch's global random generator (no "
                          "torch.manual_seed inside): the caller seeds once, and every later "
                          "draw goes on from there",
        }),
        Exercise("generate", "model, prompt, n_tokens, temperature=1.0, top_k=None, "
                             "generator=None, use_cache=True", 3, contract={
            "returns": "a (B, T0 + n_tokens) int64 tensor: the prompt, then the new tokens",
            "next_token": "each new token is drawn by your sample_next_token from the model's "
                          "logits at the last position (greedy with top_k=1); without the "
                          "cache the model reads the whole text so far, never a window of it",
            "sampling": "temperature and top_k are passed on to sample_next_token",
            "cache": "the same tokens with use_cache=True and use_cache=False for the same "
                     "generator state",
            "randomness": "draws with the given generator (the same state, the same tokens), "
                          "with generator=None from PyTorch's global one (two seeds, two "
                          "texts); never reseeds or makes a generator of its own",
            "unchanged": UNCHANGED,
        }, rules={"one_position": "with use_cache=True, every call after the first gives the "
                                  "model only the newest token and the caches it returned, "
                                  "and with use_cache=False every call gets the whole text "
                                  "so far and no caches"}),
    ), think={"think_untied_head": 1, "think_beyond_bigram": 1, "think_cache_or_not": 1},
        pasted=("sample_next_token",)),
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


def exercise(name: str) -> Exercise | None:
    """The declared exercise called ``name`` (exercise names are unique), or None."""
    for declared in TUTORIALS:
        for candidate in declared.exercises:
            if candidate.name == name:
                return candidate
    return None


def graded_cells() -> list[tuple[str, str]]:
    """Every graded cell in course order, as (grade id, the name it goes by in grades and
    summaries): an exercise's test cell goes by the exercise's name, a Think! answer by
    its own grade id."""
    cells = []
    for declared in TUTORIALS:
        cells += [(e.test_cell, e.name) for e in declared.exercises]
        cells += [(grade_id, grade_id) for grade_id in declared.think]
    return cells


def grade_column(grade_id: str) -> str:
    """The name a graded cell goes by in grades and summaries (see :func:`graded_cells`);
    an undeclared test cell by its grade id without ``test_``, like a declared one."""
    return dict(graded_cells()).get(grade_id, grade_id.removeprefix("test_"))


def in_course_order(names: set[str]) -> list[str]:
    """Column names (:func:`grade_column`) in the order the course declares them; names it
    does not declare come last, sorted."""
    order = {name: i for i, (_, name) in enumerate(graded_cells())}
    return sorted(names, key=lambda name: (order.get(name, len(order)), name))
