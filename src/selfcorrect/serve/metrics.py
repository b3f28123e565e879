"""Prometheus metrics of one server (its own registry, so that two servers in one process,
as in tests, count apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("selfcorrect_requests", "Chat completion requests", ["strategy", "status"], registry=r)
        self.latency = Histogram("selfcorrect_request_seconds", "Time to answer a chat completion", ["strategy"],
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=r)
        self.tokens = Counter("selfcorrect_tokens", "Tokens of every internal call", ["type"], registry=r)
        self.calls = Counter("selfcorrect_internal_calls", "Model calls made inside strategies", registry=r)
        self.rounds = Histogram("selfcorrect_rounds", "Revision rounds per request", buckets=(0, 1, 2, 3, 5, 10), registry=r)
        self.flips = Counter("selfcorrect_flips", "Revisions whose verified verdict changed", ["direction"], registry=r)
        self.memory_hits = Counter("selfcorrect_memory_hits", "Requests shown at least one lesson or rule", registry=r)
        self.feedback = Counter("selfcorrect_feedback", "Client feedback received", ["verdict"], registry=r)
        self.cycles = Counter("selfcorrect_improve_cycles", "Improve cycles on the traffic, by outcome", ["status"],
                              registry=r)
        self.canary = Counter("selfcorrect_canary_decisions", "Candidate checkpoints promoted or rolled back",
                              ["decision"], registry=r)
        self.shadowed = Counter("selfcorrect_canary_shadowed", "Requests a candidate answered in the shadow", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
