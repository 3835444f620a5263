"""``python -m pipeline.grading DIR``: autograde a class (see :mod:`pipeline.grading.autograde`)."""

from pipeline.grading.autograde import main

raise SystemExit(main())
