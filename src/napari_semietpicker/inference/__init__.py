"""Picking: sliding-window prediction, thresholds, batch runs, template matching, the
review queue."""
