"""PyTorch CPU reference for bench/train-bench.ts (issue 13, "Local training").

The same MLP (widths from --widths, ReLU hidden layers, one logit, binary cross-entropy from
the logits), Adam (eps 1e-7 as TensorFlow.js), the same rows (float32 files written by the
TypeScript bench), a fresh shuffle every epoch and consecutive batches, as fedmark's trainLocal.
Prints one JSON line: {"batch": ..., "threads": ..., "samplesPerSecond": ..., ...}.

  python3 bench/torch_mlp.py --x x.f32 --y y.f32 --rows 8192 --widths 40,64,32,1 --batch 64 --threads 2
"""
import argparse
import json
import time

import numpy as np
import torch
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--x", required=True)
    parser.add_argument("--y", required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--widths", default="40,64,32,1")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--min-seconds", type=float, default=1.5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    widths = [int(w) for w in args.widths.split(",")]
    x = torch.from_numpy(np.fromfile(args.x, dtype=np.float32).reshape(args.rows, widths[0]))
    y = torch.from_numpy(np.fromfile(args.y, dtype=np.float32).reshape(args.rows, 1))

    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, eps=1e-7)
    loss_fn = nn.BCEWithLogitsLoss()
    n, batch = args.rows, args.batch

    def epoch() -> float:
        order = torch.randperm(n)
        xs, ys = x[order], y[order]
        last = 0.0
        for start in range(0, n, batch):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xs[start : start + batch]), ys[start : start + batch])
            loss.backward()
            optimizer.step()
            last = loss
        return float(last)

    epoch()  # warm-up
    rates = []
    cpu_rates = []
    loss = float("nan")
    for _ in range(args.repeats):
        epochs = 0
        started = time.perf_counter()
        cpu_started = time.process_time()  # CPU time of all this process's threads
        while True:
            loss = epoch()
            epochs += 1
            seconds = time.perf_counter() - started
            if seconds >= args.min_seconds:
                break
        rates.append(n * epochs / seconds)
        cpu_rates.append(n * epochs / (time.process_time() - cpu_started))
    rates.sort()
    cpu_rates.sort()
    print(json.dumps({
        "trainer": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "widths": widths,
        "samplesPerSecond": rates[len(rates) // 2],
        "samplesPerCpuSecond": cpu_rates[len(cpu_rates) // 2],
        "lastLoss": loss,
    }))


if __name__ == "__main__":
    main()
