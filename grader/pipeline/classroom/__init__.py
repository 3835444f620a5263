"""The class around the grading: the term and its roster and deadlines, collecting
submissions (never trusting a file in them), the sample class, and the LMS hand-back."""
