"""Step `evaluate`: measure the trained model on the held-out test images.

Writes `metrics.json`:
  accuracy, log_loss      over the whole test set
  per_digit               precision, recall, F1 and support of each digit
  macro                   the unweighted mean of those over the ten digits
  confusion_matrix        rows: true digit, columns: predicted digit
  most_confused           the largest off-diagonal cells, most frequent first

The model is read with torch.load(weights_only=True): tensors and plain
containers only, never arbitrary pickled objects. A metric that is
undefined (precision of a digit never predicted) is `null`. Floats are
rounded to 6 decimals and keys sorted, so the file is byte-for-byte stable.

Usage: python3 evaluate.py --prepared DIR --model DIR --out DIR --threads N
"""

import argparse
import os
import sys

import common
import net
import torch


def per_digit_metrics(confusion):
    """Precision, recall, F1 and support per digit from a confusion matrix
    (list of rows: true digit, columns: predicted digit)."""
    out = {}
    for d in range(common.CLASSES):
        tp = confusion[d][d]
        predicted = sum(confusion[t][d] for t in range(common.CLASSES))
        support = sum(confusion[d])
        precision = tp / predicted if predicted else None
        recall = tp / support if support else None
        if precision is None or recall is None or precision + recall == 0:
            f1 = None
        else:
            f1 = 2 * precision * recall / (precision + recall)
        out[str(d)] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return out


def macro(per_digit, key):
    """Mean of one metric over the digits where it is defined (None if none)."""
    values = [m[key] for m in per_digit.values() if m[key] is not None]
    return sum(values) / len(values) if values else None


def main(argv):
    p = argparse.ArgumentParser(description="evaluate the digits perceptron")
    p.add_argument("--prepared", required=True, help="output directory of `prepare`")
    p.add_argument("--model", required=True, help="output directory of `train`")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--threads", required=True, type=int, help="torch.set_num_threads; 0: PyTorch's default")
    args = p.parse_args(argv)
    # Inference draws no random numbers; the seed is not needed.
    net.setup_torch(args.threads if args.threads > 0 else torch.get_num_threads(), None)

    try:
        X = common.load_npy(os.path.join(args.prepared, "X_test.npy"))
        y = common.load_npy(os.path.join(args.prepared, "y_test.npy"))
        state = torch.load(os.path.join(args.model, "model.pt"), map_location=net.DEVICE, weights_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        common.fail("evaluate", f"cannot read the test data or the model: {e}")

    # The hidden width is the first dimension of the first layer's weights.
    model = net.DigitsMLP(state["fc1.weight"].shape[0]).to(net.DEVICE)
    model.load_state_dict(state)
    model.eval()
    pixels = net.pixels_tensor(X)
    digits = net.labels_tensor(y)
    with torch.no_grad():
        logits = model(pixels)
        log_loss = float(torch.nn.functional.cross_entropy(logits, digits))
        predicted = logits.argmax(dim=1)

    confusion = [[0] * common.CLASSES for _ in range(common.CLASSES)]
    for t, q in zip(digits.tolist(), predicted.tolist()):
        confusion[t][q] += 1
    per_digit = per_digit_metrics(confusion)
    errors = sorted(
        (
            (confusion[t][q], t, q)
            for t in range(common.CLASSES)
            for q in range(common.CLASSES)
            if t != q and confusion[t][q]
        ),
        key=lambda e: (-e[0], e[1], e[2]),
    )
    correct = sum(confusion[d][d] for d in range(common.CLASSES))

    os.makedirs(args.out, exist_ok=True)
    common.write_json(
        os.path.join(args.out, "metrics.json"),
        {
            "test_rows": len(y),
            "accuracy": correct / len(y),
            "log_loss": log_loss,
            "per_digit": per_digit,
            "macro": {k: macro(per_digit, k) for k in ("precision", "recall", "f1")},
            "confusion_matrix": confusion,
            "most_confused": [{"true": t, "predicted": q, "count": c} for c, t, q in errors[:5]],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
