"""Checks for the exercises: each tells the learner what exactly is wrong.

``core`` holds the machinery (:func:`check_function`, :class:`Mistake`, ...); one module
per notebook holds that notebook's checks, and notebooks import them from there::

    from course_lib.checks.start_here import check_mean_over_time   # 00
    from course_lib.checks.retrieval import check_soft_lookup        # 01
    from course_lib.checks.similarity import check_cosine_against_keys  # 02
    from course_lib.checks.softmax import check_stable_softmax       # 03

The machinery and notebook 00's warm-up are also available from this package itself.
"""
from course_lib.checks.core import (CORRECT, ERROR, NOT_DONE, WRONG, Case, CheckResult, Mistake,
                                    check_function, compare_answer, describe_value, same_value)
from course_lib.checks.start_here import check_mean_over_time, mean_over_time

__all__ = [
    "CORRECT", "ERROR", "NOT_DONE", "WRONG", "Case", "CheckResult", "Mistake", "check_function",
    "compare_answer", "describe_value", "same_value", "check_mean_over_time", "mean_over_time",
]
