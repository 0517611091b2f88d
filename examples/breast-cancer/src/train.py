"""Step `train`: fit a seeded gradient boosting classifier.

Outputs:
  model.pkl    the fitted sklearn estimator, pickle protocol 4
  train.json   hyperparameters, training set summary, library versions

HistGradientBoostingClassifier parallelizes with OpenMP and keeps the
thread count it used; the sandbox pins OMP_NUM_THREADS (recipe `threads`),
which keeps both the fit and the pickle identical run to run. Early
stopping is off, so the seed only fixes the (unused for this data size)
binning subsample and the model is a pure function of the training data.

Usage: python3 train.py --features DIR --out DIR --seed N
           --learning-rate F --max-iter N --max-leaf-nodes N
           --min-samples-leaf N --l2-regularization F
"""

import argparse
import os
import pickle
import sys

import common
import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier


def main(argv):
    p = argparse.ArgumentParser(description="train the breast cancer classifier")
    p.add_argument("--features", required=True, help="output directory of `featurize`")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--learning-rate", required=True, type=float)
    p.add_argument("--max-iter", required=True, type=int)
    p.add_argument("--max-leaf-nodes", required=True, type=int)
    p.add_argument("--min-samples-leaf", required=True, type=int)
    p.add_argument("--l2-regularization", required=True, type=float)
    args = p.parse_args(argv)

    try:
        X = common.load_npy(os.path.join(args.features, "X_train.npy"))
        y = common.load_npy(os.path.join(args.features, "y_train.npy"))
    except (OSError, ValueError) as e:
        common.fail("train", f"cannot read the training features: {e}")
    if X.shape[0] != y.shape[0]:
        common.fail("train", f"X_train has {X.shape[0]} rows but y_train has {y.shape[0]}")

    hyperparameters = {
        "learning_rate": args.learning_rate,
        "max_iter": args.max_iter,
        "max_leaf_nodes": args.max_leaf_nodes,
        "min_samples_leaf": args.min_samples_leaf,
        "l2_regularization": args.l2_regularization,
        "early_stopping": False,
        "random_state": args.seed,
    }
    model = HistGradientBoostingClassifier(**hyperparameters)
    try:
        model.fit(X, y)
    except ValueError as e:
        common.fail("train", f"fitting failed: {e}")

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "model.pkl"), "wb") as f:
        pickle.dump(model, f, protocol=4)

    train_accuracy = float(np.mean(model.predict(X) == y))
    common.write_json(
        os.path.join(args.out, "train.json"),
        {
            "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
            "hyperparameters": hyperparameters,
            "iterations": int(model.n_iter_),
            "classes": [int(c) for c in model.classes_],
            "train_rows": int(X.shape[0]),
            "train_malignant": int(y.sum()),
            "train_accuracy": train_accuracy,
            "pickle_protocol": 4,
            "versions": {
                "python": "%d.%d.%d" % sys.version_info[:3],
                "numpy": np.__version__,
                "scikit-learn": sklearn.__version__,
            },
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
