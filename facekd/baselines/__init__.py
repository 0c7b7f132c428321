"""Baseline methods under one interface (scratch, teacher probe, Hinton KD, triplet, MAML, feature KD, pixels).

Every method is a plug-in registered in :data:`METHODS`; :func:`run_method` runs one under the shared split
and caches its :class:`MethodResult`; :func:`facekd.baselines.compare.compare_baselines` runs them all.
"""
from facekd.baselines.base import METHODS, Fitted, Method, MethodResult, Predictor, evaluate_fitted, run_method

__all__ = ["METHODS", "Method", "Fitted", "Predictor", "MethodResult", "evaluate_fitted", "run_method"]
