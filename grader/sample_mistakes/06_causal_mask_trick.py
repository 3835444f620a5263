"""Typical mistakes made by the sample class's student `typical_mistakes` in 06_causal_mask_trick."""

ANSWERS = {
    # The running sum divided by T instead of by t + 1.
    "running_mean_matmul": '''def running_mean_matmul(x: torch.Tensor) -> torch.Tensor:
    """Row t of each sequence = mean of rows 0..t, as (normalised lower triangle) @ x."""
    T = x.shape[1]
    weights = torch.tril(torch.ones(T, T, dtype=x.dtype, device=x.device)) / T
    return weights @ x
''',
    # Karpathy's notebook style: softmax over dim=1, which for (B, T, T) is the query axis.
    "causal_attention_weights": '''def causal_attention_weights(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the keys of scores (..., T, T), with every future key masked out."""
    T = scores.shape[-1]
    tril = torch.tril(torch.ones(T, T, device=scores.device))
    wei = scores.masked_fill(tril == 0, float("-inf"))
    return torch.softmax(wei, dim=1)
''',
    # Scores not divided by sqrt(head_size).
    "CausalSelfAttentionHead": '''class CausalSelfAttentionHead(nn.Module):
    """One head of causal self-attention: (B, T, n_embd) -> (B, T, head_size)."""

    def __init__(self, n_embd: int, head_size: int) -> None:
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.query(x), self.key(x), self.value(x)
        scores = q @ k.transpose(-2, -1)
        T = x.shape[1]
        tril = torch.tril(torch.ones(T, T, device=x.device))
        scores = scores.masked_fill(tril == 0, float("-inf"))
        return torch.softmax(scores, dim=-1) @ v
''',
}
