"""The server's gated memory (memory/gate.py): which arm a request is shown, the shadow trial
on a share of requests, and what a client's feedback teaches.

A request is answered with the arm the gate serves (none until one is admitted). On some
requests a second run of the same strategy tries another arm in the shadow; its answer is
kept with the completion, never returned. Feedback scores both: the served answer by the
client's verdict, the shadow's against the correct answer when the client gives one (math),
or by sharing or not the served answer's value when the served one was right. That pair is
the gate's evidence. A wrong answer with its correct answer, or an informative pair (one
right, one wrong), becomes a worked example: for a help desk whose questions recur or are
paraphrased, the next similar question is shown it once the examples arm is admitted.
"""

from __future__ import annotations

from selfcorrect.memory.examples import ExampleBank, WorkedExample
from selfcorrect.memory.arms import SHOWN
from selfcorrect.memory.gate import Gate
from selfcorrect.verify.answers import answers_match, vote_key


def shadow_verdict(kind: str, served: str | None, shadow: str | None, correct: bool, answer: str | None) -> bool | None:
    """Whether the shadow's answer was right, from the feedback on the served one; None where
    it could be told only for one verdict on the served answer.

    A verdict alone ("correct": yes or no, no answer) tells a shadow of another value wrong when
    the served answer was right, and nothing when it was wrong. Counting the first and not the
    second would record every pair where the served side won and none where it lost: an
    admitted arm credited with help and never charged with harm. So a pair is recorded only
    where both directions could have been seen: against the correct answer, from the same
    value as the served one, or from a shadow with no answer (wrong whatever the served was)."""
    if kind != "math":
        return None  # answers of other kinds are not values to compare
    if shadow is None:
        return False
    if answer is not None:
        return answers_match(shadow, answer)
    if served is not None and vote_key(shadow) == vote_key(served):
        return correct
    return None


def learn_from_feedback(gate: Gate, examples: ExampleBank, namespace: str, payload: dict, correct: bool,
                        answer: str | None, provenance: dict) -> dict:
    """The gate's pair and the worked example a feedback gives; what was recorded."""
    served_arm, shadow = payload.get("memory_arm") or "none", payload.get("shadow")
    out: dict = {"pair": None, "example": None}
    shadow_right = None
    if shadow is not None:
        shadow_right = shadow_verdict(payload["kind"], payload.get("answer"), shadow.get("answer"), correct, answer)
        pair = None
        if shadow_right is not None and served_arm == "none" and shadow["arm"] in SHOWN:
            pair = (shadow["arm"], shadow_right, correct)
        elif shadow_right is not None and served_arm in SHOWN and shadow["arm"] == "none":
            pair = (served_arm, correct, shadow_right)
        if pair is not None:
            gate.record(namespace, *pair)
            out["pair"] = {"arm": pair[0], "shown_right": pair[1], "none_right": pair[2]}
    reply = None
    if not correct and answer is not None:
        reply = f"The answer is {answer}." if payload["kind"] == "math" else answer
    elif correct and shadow_right is False:
        reply = payload.get("text")
    elif not correct and shadow_right:
        reply = shadow.get("text")
    if reply and payload.get("messages"):
        out["example"] = examples.add(WorkedExample(namespace=namespace, input=payload["question"], reply=reply,
                                                    messages=payload["messages"], check="user", provenance=provenance))
    return out
