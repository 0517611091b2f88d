"""Step `featurize`: split the validated data and standardize the features.

The split is stratified on the label and seeded; the standardization
(mean and scale per feature) is fitted on the training rows only and
applied to both sets, so nothing about the test rows leaks into training.

Outputs (np.save, float64/int64 little-endian):
  X_train.npy, X_test.npy   standardized features
  y_train.npy, y_test.npy   labels, 1 = malignant
  test_rows.npy             0-based data row of every test sample
  features.json             column names, scaler parameters, split summary

Usage: python3 featurize.py --data DIR --validation DIR --out DIR
           --seed N --test-fraction F
"""

import argparse
import os
import sys

import common
import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler


def main(argv):
    p = argparse.ArgumentParser(description="split and standardize the breast cancer data")
    p.add_argument("--data", required=True, help="directory holding breast_cancer.csv")
    p.add_argument("--validation", required=True, help="output directory of `validate`")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--test-fraction", required=True, type=float)
    args = p.parse_args(argv)

    if not 0.0 < args.test_fraction < 1.0:
        common.fail("featurize", f"--test-fraction must be in (0, 1), got {args.test_fraction}")

    # Refuse to run on data that did not pass validation, or on a different
    # file than the one validated.
    validation_path = os.path.join(args.validation, "validation.json")
    try:
        validation = common.read_json(validation_path)
    except (OSError, ValueError) as e:
        common.fail("featurize", f"cannot read `{validation_path}`: {e}")
    if not validation.get("passed"):
        common.fail("featurize", "the data did not pass validation; see `validation.json`")
    data_path = os.path.join(args.data, common.DATA_FILE)
    if common.sha256_file(data_path) != validation["data"]["sha256"]:
        common.fail("featurize", f"`{data_path}` is not the file that was validated")

    try:
        X, target = common.load(data_path)
    except common.DataError as e:
        common.fail("featurize", str(e))
    y = common.malignant_label(target)
    rows = np.arange(len(y), dtype="<i8")

    X_train, X_test, y_train, y_test, rows_train, rows_test = train_test_split(
        X, y, rows, test_size=args.test_fraction, random_state=args.seed, stratify=y
    )

    scaler = StandardScaler().fit(X_train)
    os.makedirs(args.out, exist_ok=True)
    common.save_npy(os.path.join(args.out, "X_train.npy"), scaler.transform(X_train), "<f8")
    common.save_npy(os.path.join(args.out, "X_test.npy"), scaler.transform(X_test), "<f8")
    common.save_npy(os.path.join(args.out, "y_train.npy"), y_train, "<i8")
    common.save_npy(os.path.join(args.out, "y_test.npy"), y_test, "<i8")
    common.save_npy(os.path.join(args.out, "test_rows.npy"), rows_test, "<i8")

    common.write_json(
        os.path.join(args.out, "features.json"),
        {
            "columns": common.FEATURES,
            "label": {"name": "malignant", "positive": 1, "negative": 0, "source": "CSV target 0 (malignant)"},
            "scaler": {
                "kind": "standard (fitted on the training rows only)",
                "mean": list(scaler.mean_),
                "scale": list(scaler.scale_),
            },
            "split": {
                "seed": args.seed,
                "stratified_on": "label",
                "test_fraction": args.test_fraction,
                "train_rows": int(len(y_train)),
                "test_rows": int(len(y_test)),
                "train_malignant": int(y_train.sum()),
                "test_malignant": int(y_test.sum()),
            },
            "data_sha256": validation["data"]["sha256"],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
