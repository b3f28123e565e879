"""`selfcorrect improve`: expert iteration that compounds label-free into a recipe the user
runs (loop.py), its labels and data (labels.py) and its report (report.py)."""
