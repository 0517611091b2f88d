"""Shared pieces of the breast cancer pipeline: the data schema, the CSV
reader, and deterministic JSON output.

Only the standard library and numpy are imported here, so every step can
use it. Nothing in this module reads the clock, the environment or the
network.
"""

import csv
import hashlib
import json
import math
import os
import sys

import numpy as np

# The 10 nuclear measurements of the Wisconsin diagnostic breast cancer data;
# each is reported three times: mean, standard error, and "worst" (mean of
# the three largest values). Column order is the order of the CSV, which is
# the order of `sklearn.datasets.load_breast_cancer().feature_names`.
MEASUREMENTS = [
    "radius",
    "texture",
    "perimeter",
    "area",
    "smoothness",
    "compactness",
    "concavity",
    "concave points",
    "symmetry",
    "fractal dimension",
]
FEATURES = (
    ["mean " + m for m in MEASUREMENTS]
    + [m + " error" for m in MEASUREMENTS]
    + ["worst " + m for m in MEASUREMENTS]
)

# Plausibility bounds per measurement (inclusive), generous on purpose: a
# value outside them is a data error (wrong unit, shifted column), not an
# unusual tumour. Radius and perimeter are in image units (about 0.1 mm per
# unit at the original scanning resolution), area in squared units; the
# others are dimensionless.
PLAUSIBLE = {
    "radius": (0.0, 60.0),
    "texture": (0.0, 80.0),
    "perimeter": (0.0, 400.0),
    "area": (0.0, 10000.0),
    "smoothness": (0.0, 1.0),
    "compactness": (0.0, 3.0),
    "concavity": (0.0, 3.0),
    "concave points": (0.0, 1.0),
    "symmetry": (0.0, 1.0),
    "fractal dimension": (0.0, 1.0),
}

# In the CSV, target 0 is malignant and 1 is benign (the header says
# `malignant,benign`). The model predicts malignancy: label 1 = malignant.
CSV_CLASS_NAMES = ["malignant", "benign"]
POSITIVE_CLASS = "malignant"

DATA_FILE = "breast_cancer.csv"

# Floats in JSON outputs are rounded to this many decimals, so that the last
# bits of a floating point sum cannot make two equivalent reports differ.
JSON_DECIMALS = 6


class DataError(Exception):
    """The input data does not have the expected shape or content."""


def fail(step, message):
    """Print `error: <message>` for the step and exit with status 1."""
    print(f"{step}: error: {message}", file=sys.stderr)
    sys.exit(1)


def sha256_file(path):
    """The hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def read_raw(path):
    """Read the CSV as text fields: (header fields, list of row fields).

    The first line is sklearn's header `n_rows,n_features,class0,class1`,
    then one row per sample: 30 feature values and the integer target.
    """
    if not os.path.isfile(path):
        raise DataError(f"data file `{path}` does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"data file `{path}` is empty")
    return rows[0], rows[1:]


def load(path):
    """Parse the CSV into (X float64 [n, 30], target int64 [n]) or raise
    DataError. Only structure is checked here; `validate.py` checks content.
    """
    header, rows = read_raw(path)
    width = len(FEATURES) + 1
    X = np.empty((len(rows), len(FEATURES)), dtype="<f8")
    target = np.empty(len(rows), dtype="<i8")
    for i, row in enumerate(rows):
        if len(row) != width:
            raise DataError(f"row {i + 2} has {len(row)} fields, expected {width}")
        try:
            X[i] = [float(v) for v in row[:-1]]
            target[i] = int(row[-1])
        except ValueError as e:
            raise DataError(f"row {i + 2}: {e}") from None
    return X, target


def malignant_label(target):
    """Map the CSV target (0 malignant, 1 benign) to the model's label
    (1 malignant, 0 benign)."""
    return (target == 0).astype("<i8")


def rounded(value, decimals=JSON_DECIMALS):
    """Round every float in a JSON-like structure; reject NaN and infinity
    (JSON has no spelling for them)."""
    if isinstance(value, dict):
        return {str(k): rounded(v, decimals) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, decimals) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"non-finite float {v} in a report")
        v = round(v, decimals)
        return 0.0 if v == 0 else v
    return value


def write_json(path, value):
    """Write `value` as JSON: floats rounded, keys sorted, two-space indent,
    trailing newline. Same value, same bytes."""
    text = json.dumps(rounded(value), sort_keys=True, indent=2, ensure_ascii=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text + "\n")


def save_npy(path, array, dtype):
    """np.save a C-contiguous little-endian array (never np.savez: zip
    members carry timestamps)."""
    np.save(path, np.ascontiguousarray(array, dtype=dtype), allow_pickle=False)


def load_npy(path):
    """np.load without pickle support."""
    return np.load(path, allow_pickle=False)


def read_json(path):
    """Read a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)
