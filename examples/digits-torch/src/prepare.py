"""Step `prepare`: check the data snapshot, then split it into training and
test images.

Outputs:
  prepare.json   every data check (passed or not), the data file's SHA-256
                 and the split summary
  X_train.npy    training pixels, uint8 [n, 64] (counts 0..16, unscaled)
  y_train.npy    training digits, int64 [n]
  X_test.npy     test pixels, uint8 [m, 64]
  y_test.npy     test digits, int64 [m]

Exits with status 1, after writing `prepare.json`, if any check fails; no
arrays are written then, so nothing can be trained on bad data.

The split is stratified by digit and seeded: numpy's PCG64 generator gives
the same permutation on every platform and numpy version that has it.
Scaling is left to `train`, which keeps its statistics in the model.

Usage: python3 prepare.py --data DIR --out DIR --seed N
           --test-fraction F --min-class-rows N
"""

import argparse
import os
import sys

import common
import numpy as np


def check_data(rows, min_class_rows):
    """Run every check on the text rows; return the list of checks."""
    checks = []

    def check(name, passed, detail):
        checks.append({"name": name, "passed": bool(passed), "detail": detail})
        return passed

    width = common.PIXELS + 1
    bad_width = [i + 1 for i, r in enumerate(rows) if len(r) != width]
    if not check(
        "field_count",
        rows and not bad_width,
        f"{len(rows)} rows, {len(bad_width)} without {width} fields"
        + (f" (first at line {bad_width[0]})" if bad_width else ""),
    ):
        return checks

    # Every field an integer; pixels 0..16, digits 0..9.
    not_int = [(i + 1, v) for i, r in enumerate(rows) for v in r if not v.strip().isdigit()]
    if not check(
        "integers",
        not not_int,
        f"{len(not_int)} fields that are not non-negative integers"
        + (f" (first: line {not_int[0][0]}, {not_int[0][1]!r})" if not_int else ""),
    ):
        return checks
    bad_pixel = sum(1 for r in rows for v in r[:-1] if int(v) > common.PIXEL_MAX)
    check("pixel_range", bad_pixel == 0, f"{bad_pixel} pixel values above {common.PIXEL_MAX}")
    bad_digit = sum(1 for r in rows if int(r[-1]) >= common.CLASSES)
    check("digit_range", bad_digit == 0, f"{bad_digit} digits outside 0..{common.CLASSES - 1}")

    # Every digit well represented, so that a stratified split leaves
    # examples of each in both halves.
    counts = [sum(1 for r in rows if int(r[-1]) == d) for d in range(common.CLASSES)]
    check(
        "class_counts",
        min(counts) >= min_class_rows,
        f"rows per digit {counts}, minimum {min_class_rows}",
    )

    # A duplicated image would leak between the training and the test set.
    unique = len({tuple(r) for r in rows})
    check("no_duplicate_rows", unique == len(rows), f"{len(rows) - unique} duplicated rows")
    return checks


def stratified_split(digits, test_fraction, seed):
    """Row indices (train, test), each sorted: per digit, a seeded
    permutation of its rows, the first round(n * test_fraction) to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for d in range(common.CLASSES):
        rows = np.flatnonzero(digits == d)
        rows = rows[rng.permutation(len(rows))]
        n_test = int(round(len(rows) * test_fraction))
        test.append(rows[:n_test])
        train.append(rows[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def main(argv):
    p = argparse.ArgumentParser(description="check and split the digits data snapshot")
    p.add_argument("--data", required=True, help="directory holding digits.csv.gz")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--test-fraction", required=True, type=float)
    p.add_argument("--min-class-rows", required=True, type=int)
    args = p.parse_args(argv)
    if not 0 < args.test_fraction < 1:
        common.fail("prepare", f"--test-fraction must be between 0 and 1, not {args.test_fraction}")

    path = os.path.join(args.data, common.DATA_FILE)
    try:
        rows = common.read_rows(path)
    except common.DataError as e:
        common.fail("prepare", str(e))
    checks = check_data(rows, args.min_class_rows)
    failed = [c for c in checks if not c["passed"]]
    report = {
        "checks": checks,
        "data": {"file": common.DATA_FILE, "sha256": common.sha256_file(path), "rows": len(rows)},
        "passed": not failed,
    }
    os.makedirs(args.out, exist_ok=True)
    if failed:
        common.write_json(os.path.join(args.out, "prepare.json"), report)
        for c in failed:
            print(f"prepare: check `{c['name']}` failed: {c['detail']}", file=sys.stderr)
        common.fail("prepare", f"{len(failed)} of {len(checks)} data checks failed; training is blocked")

    pixels, digits = common.parse_rows(rows)
    train, test = stratified_split(digits, args.test_fraction, args.seed)
    common.save_npy(os.path.join(args.out, "X_train.npy"), pixels[train], "u1")
    common.save_npy(os.path.join(args.out, "y_train.npy"), digits[train], "<i8")
    common.save_npy(os.path.join(args.out, "X_test.npy"), pixels[test], "u1")
    common.save_npy(os.path.join(args.out, "y_test.npy"), digits[test], "<i8")

    report["split"] = {
        "seed": args.seed,
        "stratified_on": "digit",
        "test_fraction": args.test_fraction,
        "train_rows": int(len(train)),
        "test_rows": int(len(test)),
        "train_per_digit": [int(np.sum(digits[train] == d)) for d in range(common.CLASSES)],
        "test_per_digit": [int(np.sum(digits[test] == d)) for d in range(common.CLASSES)],
    }
    common.write_json(os.path.join(args.out, "prepare.json"), report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
