"""Tutorial 08's two comparisons at an honest budget: the ViT against the MLP trained until
both curves are flat, over several seeds; and the skew experiment over several seeds (each
seed draws its own corpus and its own model), at the notebook's 35 steps and at a longer
budget.

The ViT is ``helpers.demos.beyond_words.build_vit`` with the solution notebook's
``PatchEmbedding`` (read from ``solutions/``), the MLP ``mlp_baseline``, both trained by
``train_digit_classifier`` exactly as the notebook trains them (seed 0 is the notebook's run);
the skew experiment is ``skew_experiment`` with the solution's ``sequence_log_prob``.

Writes ``helpers/data/beyond_words_digit_curves.csv`` (model, seed, epoch, test accuracy) and
``helpers/data/beyond_words_skew_seeds.csv`` (steps, seed, corpus, skew, occupation, the data's
log-odds, the learned preference), and prints a summary. Not part of ``make test``. After a
rerun, update ``helpers/data/beyond_words_budgets.SOURCE.md``.

    python bench/beyond_words_budgets.py --epochs 60 --vit-seeds 0 1 2 3 4 \
        --skew-seeds 0 1 2 3 4 5 6 7 8 9 --steps 35 140
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from solution_code import solution_namespace

from helpers.demos import beyond_words as demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=60, help="epochs per digit model")
    parser.add_argument("--vit-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--skew-seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--steps", type=int, nargs="+", default=[35, 140],
                        help="training steps of the language models (default: 35 140)")
    parser.add_argument("--skip", choices=["digits", "skew"], help="leave one table as it is")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", type=Path, default=demo.DATA_DIR, help="folder for the CSVs")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    solution = solution_namespace("08_beyond_words")
    if args.skip != "digits":
        start = time.perf_counter()
        images, labels = demo.load_digits()
        rows = demo.digit_curves(solution["PatchEmbedding"],
                                 demo.split_digits(images, labels, n_test=500),
                                 seeds=args.vit_seeds, epochs=args.epochs)
        path = args.out / demo.DIGIT_CURVES_CSV.name
        demo.write_rows(rows, path, demo.DIGIT_CURVE_FIELDS)
        print(f"digits: {len(rows)} rows in {time.perf_counter() - start:.0f} s -> {path}")
        for name, table in demo.load_digit_curves(path).items():
            last, short = table[:, -10:], table[:, min(7, table.shape[1]) - 1]
            print(f"  {name}: epoch 7 {short.mean():.1%} ± {short.std(ddof=1):.1%}, "
                  f"epoch {table.shape[1]} {table[:, -1].mean():.1%} ± "
                  f"{table[:, -1].std(ddof=1):.1%}; last 10 epochs of the mean curve span "
                  f"{np.ptp(last.mean(0)):.1%}")
    if args.skip != "skew":
        start = time.perf_counter()
        rows = demo.skew_seed_rows(solution["sequence_log_prob"], seeds=args.skew_seeds,
                                   steps=args.steps)
        path = args.out / demo.SKEW_SEEDS_CSV.name
        demo.write_rows(rows, path, demo.SKEW_SEED_FIELDS)
        print(f"skew: {len(rows)} rows in {time.perf_counter() - start:.0f} s -> {path}")
        table = demo.load_skew_seeds(path)
        for n_steps in args.steps:
            print(f"  {n_steps} steps: learned - data, mean ± sd over seeds")
            for (corpus, occupation), v in demo.skew_summary(table, n_steps).items():
                print(f"    {corpus:22s} {occupation:10s} data {v['data']:+.2f} ± "
                      f"{v['data_sd']:.2f}  learned {v['learned']:+.2f} ± "
                      f"{v['learned_sd']:.2f}  excess {v['excess']:+.2f} ± {v['excess_sd']:.2f}")
    print(f"torch {torch.__version__}, {args.threads} thread(s)")


if __name__ == "__main__":
    main()
