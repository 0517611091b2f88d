"""Step `validate`: check the data snapshot before anything is trained on it.

Writes `validation.json` (every check, passed or not) into the output
directory and exits with status 1 if any check fails. Later steps take this
step's output as an input, so a failed validation blocks training.

Usage: python3 validate.py --data DIR --out DIR [--min-class-fraction F]
"""

import argparse
import math
import os
import sys

import common
import numpy as np


def check_data(path, min_class_fraction):
    """Run every check on the CSV at `path`; return (checks, summary)."""
    checks = []

    def check(name, passed, detail):
        checks.append({"name": name, "passed": bool(passed), "detail": detail})
        return passed

    header, rows = common.read_raw(path)
    summary = {"file": common.DATA_FILE, "sha256": common.sha256_file(path), "rows": len(rows)}

    # Header: `n_rows,n_features,malignant,benign`.
    expected_header = [str(len(rows)), str(len(common.FEATURES))] + common.CSV_CLASS_NAMES
    check(
        "header",
        header == expected_header,
        f"header is {','.join(header)!r}, expected {','.join(expected_header)!r}",
    )

    # Shape: every row has 30 features and a target.
    width = len(common.FEATURES) + 1
    bad_width = [i + 2 for i, r in enumerate(rows) if len(r) != width]
    if not check(
        "column_count",
        not bad_width,
        f"{len(bad_width)} rows without {width} fields"
        + (f" (first at line {bad_width[0]})" if bad_width else ""),
    ):
        return checks, summary

    # Types and nulls: every feature parses as a finite float, no empty field.
    empty = sum(1 for r in rows for v in r if v.strip() == "")
    check("no_nulls", empty == 0, f"{empty} empty fields")
    not_numeric = []
    for i, r in enumerate(rows):
        for j, v in enumerate(r[:-1]):
            try:
                if not math.isfinite(float(v)):
                    raise ValueError
            except ValueError:
                not_numeric.append((i + 2, common.FEATURES[j], v))
    check(
        "feature_types",
        not not_numeric,
        f"{len(not_numeric)} non-numeric or non-finite feature values"
        + (f" (first: line {not_numeric[0][0]} `{not_numeric[0][1]}` = {not_numeric[0][2]!r})" if not_numeric else ""),
    )
    bad_target = [i + 2 for i, r in enumerate(rows) if r[-1].strip() not in ("0", "1")]
    check(
        "target_values",
        not bad_target,
        f"{len(bad_target)} targets not in {{0, 1}}"
        + (f" (first at line {bad_target[0]})" if bad_target else ""),
    )
    if not_numeric or bad_target or empty:
        return checks, summary

    X, target = common.load(path)

    # Ranges: every measurement within its plausibility bounds.
    out_of_range = []
    for j, name in enumerate(common.FEATURES):
        measurement = next(m for m in common.MEASUREMENTS if m in name)
        lo, hi = common.PLAUSIBLE[measurement]
        n = int(np.sum((X[:, j] < lo) | (X[:, j] > hi)))
        if n:
            out_of_range.append(f"`{name}`: {n} values outside [{lo}, {hi}]")
    check("plausible_ranges", not out_of_range, "; ".join(out_of_range) or "all values within bounds")

    # Consistency: the "worst" value (mean of the three largest) can never be
    # below the mean of all values.
    inconsistent = []
    for k, m in enumerate(common.MEASUREMENTS):
        n = int(np.sum(X[:, 20 + k] < X[:, k]))
        if n:
            inconsistent.append(f"`worst {m}` < `mean {m}` in {n} rows")
    check("worst_at_least_mean", not inconsistent, "; ".join(inconsistent) or "holds for every row")

    # No constant columns (a constant column is almost always an export bug).
    constant = [common.FEATURES[j] for j in range(X.shape[1]) if np.all(X[:, j] == X[0, j])]
    check("no_constant_columns", not constant, f"constant columns: {constant}" if constant else "none")

    # Duplicated rows would leak between the train and test split.
    unique_rows = np.unique(np.column_stack([X, target]), axis=0).shape[0]
    check("no_duplicate_rows", unique_rows == len(rows), f"{len(rows) - unique_rows} duplicated rows")

    # Class balance.
    y = common.malignant_label(target)
    positives = int(y.sum())
    fraction = positives / len(y) if len(y) else 0.0
    minority = min(fraction, 1 - fraction)
    check(
        "class_balance",
        minority >= min_class_fraction,
        f"minority class fraction {minority:.4f}, minimum {min_class_fraction}",
    )

    summary.update(
        {
            "features": len(common.FEATURES),
            "class_counts": {"malignant": positives, "benign": len(y) - positives},
            "malignant_fraction": fraction,
            "feature_ranges": {
                name: {"min": float(X[:, j].min()), "max": float(X[:, j].max())}
                for j, name in enumerate(common.FEATURES)
            },
        }
    )
    return checks, summary


def main(argv):
    p = argparse.ArgumentParser(description="validate the breast cancer data snapshot")
    p.add_argument("--data", required=True, help="directory holding breast_cancer.csv")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--min-class-fraction", type=float, default=0.2)
    args = p.parse_args(argv)

    path = os.path.join(args.data, common.DATA_FILE)
    try:
        checks, summary = check_data(path, args.min_class_fraction)
    except common.DataError as e:
        common.fail("validate", str(e))

    failed = [c for c in checks if not c["passed"]]
    report = {
        "checks": checks,
        "data": summary,
        "min_class_fraction": args.min_class_fraction,
        "passed": not failed,
    }
    os.makedirs(args.out, exist_ok=True)
    common.write_json(os.path.join(args.out, "validation.json"), report)

    if failed:
        for c in failed:
            print(f"validate: check `{c['name']}` failed: {c['detail']}", file=sys.stderr)
        common.fail("validate", f"{len(failed)} of {len(checks)} data checks failed; training is blocked")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
