"""How the trusted grader talks to a student's kernel.

``in_kernel`` is the one fixed step that runs in the student's kernel (its source is sent
with every request); ``grader_side`` holds the proxies the hidden tests call and parses
every answer strictly. Nothing else of the grader ever runs in a kernel.
"""
