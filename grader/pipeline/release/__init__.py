"""Making the release: the declaration checked and written into the solutions, the
solutions executed, nbgrader's student versions generated, and the public student edition.
Nothing here imports the grading side or the kernel sandbox."""
