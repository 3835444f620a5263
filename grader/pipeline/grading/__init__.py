"""Grading a class: batches of submissions autograded by nbgrader in sandboxed kernels,
the trusted verdicts of the hidden tests, the feedback pages and formgrader made inert, and
the class summary. ``python -m pipeline.grading`` runs :mod:`pipeline.grading.autograde`."""
