"""Typical mistakes made by the sample class's student `typical_mistakes` in 01."""

ANSWERS = {
    # forgets the max-subtraction: fine on small logits, nan on large ones
    "stable_softmax": '''def stable_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``x`` along ``dim``, safe for very large or very small logits."""
    exponentials = torch.exp(x)
    return exponentials / exponentials.sum(dim=dim, keepdim=True)
''',
    # adds the gains to the patterns instead of multiplying them
    "gained_dot_product_attention": '''def gained_dot_product_attention(
    x: torch.Tensor, q_1: torch.Tensor, q_2: torch.Tensor, z_1: float, z_2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``softmax(z_1 q_1 + z_2 q_2)`` over the context and the output ``w · x``."""
    w = torch.softmax(z_1 + q_1 + z_2 + q_2, dim=0)
    return w, torch.dot(w, x)
''',
}
