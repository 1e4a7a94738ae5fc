"""The service layer: one record in, one explained evaluation out."""

from cds.evaluation.evaluator import Evaluator, EVALUATION_DATE_FORMAT

__all__ = ["Evaluator", "EVALUATION_DATE_FORMAT"]
