"""Checks for the exercises: each tells the learner what exactly is wrong.

``core`` holds the machinery (:func:`check_function`, :class:`Mistake`, ...); one module
per notebook holds that notebook's checks, re-exported here::

    from course_lib.checks import check_mean_over_time
"""
from course_lib.checks.core import (CORRECT, ERROR, NOT_DONE, WRONG, Case, CheckResult, Mistake,
                                    check_function, compare_answer, describe_value, same_value)
from course_lib.checks.start_here import check_mean_over_time, mean_over_time

__all__ = [
    "CORRECT", "ERROR", "NOT_DONE", "WRONG", "Case", "CheckResult", "Mistake", "check_function",
    "compare_answer", "describe_value", "same_value", "check_mean_over_time", "mean_over_time",
]
