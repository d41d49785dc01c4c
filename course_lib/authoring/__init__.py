"""The course's own tools, for maintainers and teachers: not part of the lessons.

- :mod:`~course_lib.authoring.notebooks`: run the notebooks and store their outputs, check them, and the
  command line ``python -m course_lib.authoring`` (``list``, ``run``, ``check``, ``student``, ``slides``,
  ``hosted``);
- :mod:`~course_lib.authoring.slides`: every notebook is also a slideshow; the slide type of each cell;
- :mod:`~course_lib.authoring.student`: the student edition, with the solutions replaced by stubs;
- :mod:`~course_lib.authoring.hosted`: the install cell that opens every notebook on hosted services.

The notebooks never import these modules; the test suite and the Makefile do.
"""
