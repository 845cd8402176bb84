"""Clustering as preprocessing: digits classified from their distances to k centers.

    python examples/preprocessing_digits.py           # a coarse grid over k
    python examples/preprocessing_digits.py --full    # the chapter's grid, k = 2..99

The chapter: logistic regression on the raw 8x8 pixels scores 0.9689; put
K-Means (k=50) in front of it as a transformer and it scores 0.9778; a grid
search over k picks k=99 and scores 0.9822. StreamingKMeans is a drop-in
transformer for scikit-learn's Pipeline and GridSearchCV.
"""

from __future__ import annotations

import argparse
import warnings

from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline

import streamclust as sc


def _log_reg() -> OneVsRestClassifier:
    # The chapter's LogisticRegression(multi_class="ovr", max_iter=5000).
    return OneVsRestClassifier(LogisticRegression(max_iter=5000, random_state=42))


def _kmeans(k: int) -> sc.StreamingKMeans:
    return sc.StreamingKMeans(
        k,
        n_init=3,
        batch_size=256,
        max_passes=20,
        refine=10,
        random_state=42,
        client="sync",
        progress=False,
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="grid over every k in 2..99")
    args = ap.parse_args(argv)
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=42)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence chatter on raw pixels
        raw = _log_reg().fit(X_train, y_train).score(X_test, y_test)
        pipe = Pipeline([("kmeans", _kmeans(50)), ("log_reg", _log_reg())])
        k50 = pipe.fit(X_train, y_train).score(X_test, y_test)
        grid_k = range(2, 100) if args.full else [30, 60, 99]
        grid = GridSearchCV(pipe, {"kmeans__n_clusters": list(grid_k)}, cv=3)
        grid.fit(X_train, y_train)
        best = grid.score(X_test, y_test)
    k_best = grid.best_params_["kmeans__n_clusters"]
    print("accuracy on the test split      ours     chapter")
    print(f"  logistic regression, pixels   {raw:.4f}   0.9689")
    print(f"  StreamingKMeans(50) + log reg {k50:.4f}   0.9778")
    print(f"  grid search (best k={k_best:>2d})      {best:.4f}   0.9822 (k=99)")
    print(
        "Differences of a few test digits (0.2% each) come from the clusters found: the "
        "chapter's KMeans runs 10 full Lloyd fits per k"
        + ("." if args.full else ", and its grid tries every k from 2 to 99 (--full).")
    )
    return {"raw": raw, "k50": k50, "best": best, "best_k": k_best}


if __name__ == "__main__":
    main()
