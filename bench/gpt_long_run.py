"""The longer run of tutorial 9's GPT, and the trained weights the notebook loads.

The notebook trains its GPT for 100 steps (a few seconds), which reaches the bigram model and
no further. This script continues the same model, seed and batches for 2,000 steps, as the
notebook describes: ``train_gpt`` called again every 200 steps (a fresh AdamW each time) at a
learning rate of 0.02 up to step 1,000, then of 0.005. It prints the held-out and training
losses along the way and writes the final weights (float32, about 130 KB) to
``helpers/data/your_own_gpt_sonnets.pt``, which ``helpers.demos.your_own_gpt.load_trained``
puts into the student's own GPT. The model and the loop are the solution notebook's
(``solutions/09_your_own_gpt.ipynb``). About 75 s of CPU on one thread. Not part of
``make test``; rerun it after changing the model's sizes or member names:

    python bench/gpt_long_run.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from solution_code import solution_namespace

from helpers.demos import your_own_gpt as demo
from helpers.seed import set_seed

SIZES = {"block_size": 64, "d_model": 32, "n_heads": 4, "n_layers": 2}  # the notebook's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="steps in all (default 2000)")
    parser.add_argument("--out", type=Path, default=demo.TRAINED_WEIGHTS,
                        help="where the weights go (default: the file the notebook loads)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    set_seed(0)
    solution = solution_namespace("09_your_own_gpt")
    text, tokenizer = demo.load_sonnets()
    train_data, held_out_data = demo.split_text(tokenizer.encode(text), held_out=0.1)
    torch.manual_seed(0)
    model = solution["GPT"](tokenizer.vocab_size, *SIZES.values())
    demo.reset_weights(model, seed=0)
    get_batch = demo.batch_sampler(train_data, SIZES["block_size"], 16, seed=0)
    held_out = demo.windows(held_out_data, SIZES["block_size"])
    bigram = demo.bigram_losses(train_data, held_out_data, tokenizer.vocab_size)
    print(f"bigram model: {bigram['held_out']:.3f} held out\n")
    print("| steps | lr | training loss (last 10) | held-out loss |")
    print("| ---: | ---: | ---: | ---: |")
    start, done = time.process_time(), 0
    while done < args.steps:
        lr = 0.02 if done < 1000 else 0.005
        losses = solution["train_gpt"](model, get_batch, min(200, args.steps - done), lr=lr)
        done += len(losses)
        print(f"| {done} | {lr} | {sum(losses[-10:]) / 10:.3f} | "
              f"{demo.mean_loss(model, held_out):.3f} |")
    state = {name: tensor.detach().float().clone() for name, tensor in model.state_dict().items()}
    torch.save(state, args.out)
    print(f"\n{time.process_time() - start:.0f} s of CPU; weights written to {args.out} "
          f"({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
