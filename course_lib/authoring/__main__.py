"""``python -m course_lib.authoring ...``: the command line of :mod:`course_lib.authoring.notebooks`."""
import sys

from course_lib.authoring.notebooks import main

sys.exit(main())
