"""Code the test modules share (and scripts they run: toy_progress.py, train_once.py)."""
