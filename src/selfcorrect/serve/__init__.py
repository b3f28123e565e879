"""The self-correcting OpenAI-compatible server (`selfcorrect serve`).

    app.py       the FastAPI application: chat completions (plain and streamed), feedback,
                 models, health, metrics, trajectories by completion id
    protocol.py  requests and replies in OpenAI's shapes, errors in OpenAI's error format
    run.py       one request as one strategy run: the item view, the budget, the best answer so far
    keys.py      API keys (stored hashed) and per-key rate limits
    records.py   completions and their feedback, in the store file
    metrics.py   Prometheus metrics
"""
