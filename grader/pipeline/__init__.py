"""The course's build and grading pipeline, on top of nbgrader, nbclient and nbformat.

Run as modules from the repository root (the Makefile does):
``python -m pipeline.assignments``, ``python -m pipeline.grading DIR``,
``python -m pipeline.execute NB...``, ``python -m pipeline.demo``.
"""
