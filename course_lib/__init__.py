"""course_lib: the tested helper library of the attention course.

The notebooks in ``notebooks/`` build every idea step by step; this package holds the
final versions, plus the plumbing every notebook shares (set-up, plots, widgets, checks).

Start every notebook with::

    from course_lib import setup
    device = setup()
"""
from course_lib.session import assert_claims, environment_report, one_thread, pick_device, seed_everything, setup

__version__ = "0.1.0"

__all__ = ["setup", "assert_claims", "one_thread", "pick_device", "seed_everything", "environment_report", "__version__"]
