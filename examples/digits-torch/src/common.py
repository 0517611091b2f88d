"""Shared pieces of the digits pipeline that need no PyTorch: the data
schema, the reader of the gzipped CSV, and deterministic JSON and .npy
output.

Only the standard library and numpy are imported here. Nothing in this
module reads the clock, the environment or the network.
"""

import csv
import gzip
import hashlib
import json
import math
import os
import sys

import numpy as np

# The data snapshot: scikit-learn's copy of the UCI handwritten digits test
# set, gzipped, no header. Each row is an 8x8 image, row by row (64 pixel
# counts from 0 to 16), then the digit (0-9).
DATA_FILE = "digits.csv.gz"
IMAGE_SIDE = 8
PIXELS = IMAGE_SIDE * IMAGE_SIDE
PIXEL_MAX = 16
CLASSES = 10

# Floats in JSON outputs are rounded to this many decimals, so that the last
# bits of a floating point sum cannot make two equivalent reports differ.
JSON_DECIMALS = 6


class DataError(Exception):
    """The input data does not have the expected shape or content."""


def fail(step, message):
    """Print `<step>: error: <message>` and exit with status 1."""
    print(f"{step}: error: {message}", file=sys.stderr)
    sys.exit(1)


def sha256_file(path):
    """The hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def read_rows(path):
    """Read the gzipped CSV as lists of text fields, one list per row."""
    if not os.path.isfile(path):
        raise DataError(f"data file `{path}` does not exist")
    try:
        with gzip.open(path, "rt", encoding="ascii", newline="") as f:
            return list(csv.reader(f))
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read `{path}` as gzipped ASCII CSV: {e}") from None


def parse_rows(rows):
    """Turn text rows into (pixels uint8 [n, 64], digits int64 [n]).

    Raises DataError naming the first row (1-based line number) that does
    not have 65 integer fields; ranges are checked by `prepare.py`.
    """
    pixels = np.empty((len(rows), PIXELS), dtype="u1")
    digits = np.empty(len(rows), dtype="<i8")
    for i, row in enumerate(rows):
        if len(row) != PIXELS + 1:
            raise DataError(f"line {i + 1} has {len(row)} fields, expected {PIXELS + 1}")
        try:
            values = [int(v) for v in row]
        except ValueError as e:
            raise DataError(f"line {i + 1}: {e}") from None
        # Range-check before storing into uint8, which would wrap around.
        if not all(0 <= v <= PIXEL_MAX for v in values[:-1]):
            raise DataError(f"line {i + 1}: a pixel value outside 0..{PIXEL_MAX}")
        pixels[i] = values[:-1]
        digits[i] = values[-1]
    return pixels, digits


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


def read_json(path):
    """Read a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_npy(path, array, dtype):
    """np.save a C-contiguous little-endian array (never np.savez: zip
    members carry timestamps)."""
    np.save(path, np.ascontiguousarray(array, dtype=dtype), allow_pickle=False)


def load_npy(path):
    """np.load without pickle support."""
    return np.load(path, allow_pickle=False)
