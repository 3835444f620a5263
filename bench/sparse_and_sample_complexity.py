"""Sample complexity of a 2-sparse AND versus context length: self-attention against an MLP.

For every context length T, model and seed, train a fresh model on m = 8, 16, 32, ... samples
(fresh data each time; the seed picks the relevant positions) and record the smallest m whose
model reaches the target validation accuracy on held-out samples. The attention model is the
solution notebook's ``SelfAttentionClassifier`` (read from ``solutions/``), the MLP is
``helpers.demos.sparse_and_inductive_bias.BinaryMLP``.

Prints a CSV table ``T,model,seed,samples_to_target`` (empty = never reached), then the median
per (T, model); writes the CSV and the figure to ``bench/out/``. Not part of ``make test``.

    python bench/sparse_and_sample_complexity.py --T 8 16 32 64 --seeds 0 1 2 --target 0.95
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402
from solution_code import solution_namespace  # noqa: E402

from helpers.demos import sparse_and_inductive_bias as demo  # noqa: E402
from helpers.plotting import use_course_style  # noqa: E402
from helpers.seed import set_seed  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--T", type=int, nargs="+", default=[8, 16, 32, 64],
                        help="context lengths (default: 8 16 32 64)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds; each also picks the relevant positions (default: 0 1 2)")
    parser.add_argument("--target", type=float, default=0.95,
                        help="validation accuracy to reach (default: 0.95)")
    parser.add_argument("--s", type=int, default=2, help="sparsity of the AND (default: 2)")
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[8, 16, 32, 64, 128, 256, 512, 1024],
                        help="training-set sizes tried, in increasing order")
    parser.add_argument("--max-steps", type=int, default=300,
                        help="full-batch Adam steps per training run at most (default: 300)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: fastest for models this small)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the CSV and figure")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    set_seed(0)
    use_course_style()
    solution = solution_namespace("05_sparse_and_inductive_bias")
    start = time.perf_counter()
    rows = demo.sample_complexity_sweep(
        solution["SelfAttentionClassifier"], solution["sparse_and_dataset"], T_values=args.T,
        seeds=args.seeds, target=args.target, s=args.s, sizes=args.sizes,
        max_steps=args.max_steps, device=torch.device(args.device))
    seconds = time.perf_counter() - start

    print("T,model,seed,samples_to_target")
    for r in rows:
        found = "" if r["samples_to_target"] is None else r["samples_to_target"]
        print(f"{r['T']},{r['model']},{r['seed']},{found}")
    print()
    demo.print_medians(rows)
    print(f"\n{len(rows)} searches in {seconds:.0f} s (target {args.target:.0%}, s = {args.s}, "
          f"sizes {args.sizes[0]}..{args.sizes[-1]}, device {args.device})")
    args.out.mkdir(parents=True, exist_ok=True)
    demo.write_csv(rows, args.out / "sparse_and_sample_complexity.csv")
    demo.plot_sample_complexity(rows, target=args.target,
                                title=f"Samples to {args.target:.0%} on a {args.s}-sparse AND",
                                save_to=args.out / "sparse_and_sample_complexity.png")
    print(f"wrote {args.out / 'sparse_and_sample_complexity.csv'} and the figure beside it")


if __name__ == "__main__":
    main()
