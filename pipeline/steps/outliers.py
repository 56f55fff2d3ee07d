"""How unusual an object is within its predicted light-curve branch.

One isolation forest (Liu, Ting & Zhou 2008, ICDM) per branch (Transient, Stochastic, Periodic),
fitted on the training objects of that branch in the classifier's feature space (same -999 fill).
The score is ``-score_samples`` (higher: more unusual; about 0.5 is ordinary, towards 1 isolated
after a few splits); an object is flagged an outlier when its score is above the 99th percentile of
its branch's training scores (the top 1%).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.steps.lc_classifier import BRANCHES, preprocess

TOP_FRACTION = 0.01


class BranchOutliers:
    """Isolation forests per branch, their flag thresholds and the version stored with each score."""

    def __init__(self, version, feature_list, n_estimators=100, random_state=0):
        self.version = version
        self.feature_list = list(feature_list)
        self.n_estimators = n_estimators
        self.random_state = random_state
        self.forests = {}
        self.thresholds = {}

    def fit(self, features: pd.DataFrame, branches):
        from sklearn.ensemble import IsolationForest

        x = preprocess(features, self.feature_list)
        branches = np.asarray(branches, dtype=object)
        for branch in BRANCHES:
            rows = x[branches == branch]
            if len(rows) < 2:
                continue
            forest = IsolationForest(n_estimators=self.n_estimators, random_state=self.random_state)
            forest.fit(rows)
            self.forests[branch] = forest
            self.thresholds[branch] = float(np.quantile(-forest.score_samples(rows), 1.0 - TOP_FRACTION))
        return self

    def score(self, features: pd.DataFrame, branches) -> pd.DataFrame:
        """(oid, version, branch, score, is_outlier) for each object, scored within ``branches``
        (its predicted branch); an object whose branch has no forest gets no row."""
        x = preprocess(features, self.feature_list)
        branches = np.asarray(branches, dtype=object)
        parts = []
        for branch, forest in self.forests.items():
            rows = branches == branch
            if not rows.any():
                continue
            score = -forest.score_samples(x[rows])
            parts.append(pd.DataFrame({"oid": features.index[rows], "version": self.version, "branch": branch,
                                       "score": score, "is_outlier": score > self.thresholds[branch]}))
        if not parts:
            return pd.DataFrame(columns=["oid", "version", "branch", "score", "is_outlier"])
        return pd.concat(parts, ignore_index=True)
