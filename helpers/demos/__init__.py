"""Data and figures for each tutorial's demos (one module per tutorial).

Functions that illustrate an exercise take the student's function as an
argument, so every figure is drawn by the student's own code.
"""
