"""Hidden tests, called from the hidden block of each autograder test cell.

One module per tutorial, named like the notebook without its number. Each
``grade_<exercise>(candidate)`` function compares the candidate with a
reference on cases designed to separate the common mistakes, and raises
``CheckFailed`` whose message names the likely mistake. This package lives on
the grader's side only: it is not installed with ``helpers``.
"""
