"""The slow path: the model learns from its own verified outputs (issue 10).

    export.py   the embedded GGUF model as a transformers checkpoint that can be trained
    lineage.py  every checkpoint with its parent, round, method, data hash and metrics
"""
