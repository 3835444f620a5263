"""The course's build and grading pipeline, on top of nbgrader, nbclient and nbformat.

Run as modules from the repository root (the Makefile does):
``python -m pipeline.release.assignments``, ``python -m pipeline.grading DIR``,
``python -m pipeline.release.execute NB...``, ``python -m pipeline.demo``.
"""
