"""Step `train`: fit the digits perceptron with seeded minibatch SGD.

Outputs:
  model.pt     the model's state dict, saved with torch.save (a zip archive
               of a pickle and one raw data file per tensor)
  train.json   hyperparameters, PyTorch settings, the loss per epoch,
               training accuracy, tensor shapes and library versions

The network normalizes its hidden layer by batch statistics, which ATen
sums per thread over the batch's rows: the weights depend on the thread
count from the first step. That is why `--threads` is a recipe parameter
(0 leaves PyTorch's default, OMP_NUM_THREADS, which `repro check` varies).
Every epoch draws a fresh batch order from the seeded global generator and
drops the last incomplete batch (batch normalization needs more than one
row, and every batch then has the same size).

Usage: python3 train.py --prepared DIR --out DIR [--seed N] --threads N
           --hidden N --epochs N --batch-size N --learning-rate F
           --momentum F --weight-decay F
"""

import argparse
import os
import sys

import common
import net
import numpy as np
import torch


def main(argv):
    p = argparse.ArgumentParser(description="train the digits perceptron")
    p.add_argument("--prepared", required=True, help="output directory of `prepare`")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, help="without it, every run trains a different model")
    p.add_argument("--threads", required=True, type=int, help="torch.set_num_threads; 0: PyTorch's default")
    p.add_argument("--hidden", required=True, type=int)
    p.add_argument("--epochs", required=True, type=int)
    p.add_argument("--batch-size", required=True, type=int)
    p.add_argument("--learning-rate", required=True, type=float)
    p.add_argument("--momentum", required=True, type=float)
    p.add_argument("--weight-decay", required=True, type=float)
    args = p.parse_args(argv)

    # Before any tensor exists: thread count, deterministic algorithms, seed.
    net.setup_torch(args.threads if args.threads > 0 else torch.get_num_threads(), args.seed)

    try:
        X = common.load_npy(os.path.join(args.prepared, "X_train.npy"))
        y = common.load_npy(os.path.join(args.prepared, "y_train.npy"))
    except (OSError, ValueError) as e:
        common.fail("train", f"cannot read the prepared training data: {e}")
    if X.shape[0] != y.shape[0] or X.shape[1:] != (common.PIXELS,):
        common.fail("train", f"X_train has shape {X.shape} but y_train has {y.shape[0]} rows")
    pixels = net.pixels_tensor(X)
    digits = net.labels_tensor(y)

    model = net.DigitsMLP(args.hidden).to(net.DEVICE)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=args.learning_rate,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
    )
    n = pixels.shape[0]
    if not 2 <= args.batch_size <= n:
        common.fail("train", f"--batch-size must be between 2 and the {n} training rows")
    batches = n // args.batch_size
    epoch_loss = []
    model.train()
    for _ in range(args.epochs):
        # A fresh batch order per epoch from the global (seeded) generator.
        order = torch.randperm(n)
        total = 0.0
        for b in range(batches):
            batch = order[b * args.batch_size : (b + 1) * args.batch_size]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(pixels[batch]), digits[batch])
            loss.backward()
            optimizer.step()
            total += float(loss)
        epoch_loss.append(total / batches)

    os.makedirs(args.out, exist_ok=True)
    # A state dict (an ordered dict of tensors), not the pickled module:
    # the file then holds no reference to this script's classes. Its bytes
    # are the zip archive torch.save writes; see README.md.
    state = model.state_dict()
    torch.save(state, os.path.join(args.out, "model.pt"))

    model.eval()
    with torch.no_grad():
        train_accuracy = float((model(pixels).argmax(dim=1) == digits).float().mean())
    common.write_json(
        os.path.join(args.out, "train.json"),
        {
            "architecture": f"{common.PIXELS}-{args.hidden}-{common.CLASSES} perceptron, batch norm, ReLU",
            "hyperparameters": {
                "hidden": args.hidden,
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "learning_rate": args.learning_rate,
                "momentum": args.momentum,
                "weight_decay": args.weight_decay,
                "seed": args.seed,
            },
            "torch": {
                "threads": torch.get_num_threads(),
                "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
                "cpu_capability": net.cpu_capability(),
                "device": str(net.DEVICE),
            },
            "epoch_loss": epoch_loss,
            "train_rows": int(n),
            "batches_per_epoch": batches,
            "train_accuracy": train_accuracy,
            "state_dict": {name: list(t.shape) for name, t in state.items()},
            "versions": {
                "python": "%d.%d.%d" % sys.version_info[:3],
                "numpy": np.__version__,
                "torch": torch.__version__,
            },
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
