"""The service layer: one record in, one explained evaluation out."""

from cds.evaluation.evaluator import EVALUATION_DATE_FORMAT, Evaluator

__all__ = ["Evaluator", "EVALUATION_DATE_FORMAT"]
