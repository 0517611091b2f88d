"""Step `evaluate`: measure the trained model on the held-out test rows.

Writes `metrics.json`:
  overall      AUC, accuracy, precision, recall, specificity, Brier score,
               expected calibration error (ECE), confusion matrix
  reliability  the calibration table behind the ECE (equal-width bins)
  slices       the same metrics per tumour size tercile (`mean radius`, cut
               points from the training rows), and the largest gap between
               slices for each metric

A metric that is undefined on a slice (for example recall on a slice with
no malignant case) is `null`, never a made-up number. Floats are rounded
to 6 decimals and keys sorted, so the file is byte-for-byte stable.

Usage: python3 evaluate.py --data DIR --features DIR --model DIR --out DIR
           --threshold F --calibration-bins N --slice-feature NAME
"""

import argparse
import os
import pickle
import sys

import common
import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score


def binary_metrics(y, p, threshold):
    """Threshold metrics, AUC and Brier score; None where undefined."""
    pred = (p >= threshold).astype("<i8")
    tp = int(np.sum((pred == 1) & (y == 1)))
    tn = int(np.sum((pred == 0) & (y == 0)))
    fp = int(np.sum((pred == 1) & (y == 0)))
    fn = int(np.sum((pred == 0) & (y == 1)))
    n = len(y)
    both_classes = 0 < int(y.sum()) < n
    return {
        "n": n,
        "malignant": int(y.sum()),
        "accuracy": (tp + tn) / n if n else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "auc": float(roc_auc_score(y, p)) if both_classes else None,
        "brier": float(brier_score_loss(y, p)) if n else None,
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


def reliability(y, p, bins):
    """Equal-width reliability table on [0, 1] and the expected calibration
    error: the count-weighted mean of |observed rate - mean prediction|."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds edges[i] <= p < edges[i+1]; p == 1.0 goes in the last bin.
    index = np.minimum(np.searchsorted(edges, p, side="right") - 1, bins - 1)
    table, ece = [], 0.0
    for i in range(bins):
        mask = index == i
        count = int(mask.sum())
        row = {"bin": i, "lower": float(edges[i]), "upper": float(edges[i + 1]), "count": count}
        if count:
            mean_p = float(p[mask].mean())
            observed = float(y[mask].mean())
            row.update({"mean_predicted": mean_p, "observed_rate": observed})
            ece += count / len(y) * abs(observed - mean_p)
        else:
            row.update({"mean_predicted": None, "observed_rate": None})
        table.append(row)
    return table, ece


def main(argv):
    p = argparse.ArgumentParser(description="evaluate the breast cancer classifier")
    p.add_argument("--data", required=True, help="directory holding breast_cancer.csv")
    p.add_argument("--features", required=True, help="output directory of `featurize`")
    p.add_argument("--model", required=True, help="output directory of `train`")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--threshold", required=True, type=float)
    p.add_argument("--calibration-bins", required=True, type=int)
    p.add_argument("--slice-feature", required=True)
    args = p.parse_args(argv)

    if args.slice_feature not in common.FEATURES:
        common.fail("evaluate", f"unknown --slice-feature `{args.slice_feature}`")
    if args.calibration_bins < 1:
        common.fail("evaluate", "--calibration-bins must be at least 1")

    try:
        X_test = common.load_npy(os.path.join(args.features, "X_test.npy"))
        y_test = common.load_npy(os.path.join(args.features, "y_test.npy"))
        test_rows = common.load_npy(os.path.join(args.features, "test_rows.npy"))
        raw, _ = common.load(os.path.join(args.data, common.DATA_FILE))
        with open(os.path.join(args.model, "model.pkl"), "rb") as f:
            model = pickle.load(f)
    except (OSError, ValueError, pickle.UnpicklingError, common.DataError) as e:
        common.fail("evaluate", f"cannot read the inputs: {e}")

    positive = list(model.classes_).index(1)
    proba = model.predict_proba(X_test)[:, positive].astype("<f8")

    overall = binary_metrics(y_test, proba, args.threshold)
    table, ece = reliability(y_test, proba, args.calibration_bins)
    overall["ece"] = ece

    # Slices: terciles of the raw slice feature, cut points from train rows.
    column = common.FEATURES.index(args.slice_feature)
    train_mask = np.ones(raw.shape[0], dtype=bool)
    train_mask[test_rows] = False
    cuts = np.quantile(raw[train_mask, column], [1 / 3, 2 / 3])
    values = raw[test_rows, column]
    tercile = np.searchsorted(cuts, values, side="right")
    names = ["small", "medium", "large"]
    slices = {}
    for k, name in enumerate(names):
        mask = tercile == k
        m = binary_metrics(y_test[mask], proba[mask], args.threshold)
        lo = None if k == 0 else float(cuts[k - 1])
        hi = None if k == 2 else float(cuts[k])
        m["range"] = {"min_inclusive": lo, "max_exclusive": hi}
        slices[name] = m

    gaps = {}
    for metric in ["accuracy", "auc", "brier", "precision", "recall", "specificity"]:
        defined = {n: s[metric] for n, s in slices.items() if s[metric] is not None}
        if len(defined) >= 2:
            best = max(defined, key=lambda n: (defined[n], n))
            worst = min(defined, key=lambda n: (defined[n], n))
            gaps[metric] = {"gap": defined[best] - defined[worst], "max": best, "min": worst}
        else:
            gaps[metric] = None

    os.makedirs(args.out, exist_ok=True)
    common.write_json(
        os.path.join(args.out, "metrics.json"),
        {
            "threshold": args.threshold,
            "positive_class": common.POSITIVE_CLASS,
            "overall": overall,
            "reliability": {"bins": args.calibration_bins, "table": table},
            "slices": {
                "feature": args.slice_feature,
                "definition": "terciles of the raw feature, cut points from the training rows",
                "groups": slices,
                "gaps": gaps,
            },
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
