"""The lockstep machinery the estimators are built on (no estimator objects here)."""
