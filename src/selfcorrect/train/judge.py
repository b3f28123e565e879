"""Self-rewarding preference pairs: the model judges its own samples, and the best and worst it
judged of one item become a pair (Yuan et al., 2024). No gold enters the pairs: the judge is
the model itself (intrinsic feedback), asked for the critique strategies use, its score read
only from the final `Score: N` line.

How far the judge can be trusted is measured afterwards against the task's real check, and
reported beside the round: the AUC of its scores between right and wrong samples of one item,
how many pairs it ordered as the check would (chosen right, rejected wrong) or backwards, and
how often it gave no readable score.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from selfcorrect.models.base import Model, SamplingParams
from selfcorrect.strategies.refine import CRITIQUE
from selfcorrect.tasks import Item
from selfcorrect.train.data import Pair, usable_reply
from selfcorrect.verify.scores import read_score


async def judged_pairs(model: Model, items: Sequence[Item], rows: Sequence, params: SamplingParams, *,
                       per_item: int = 4) -> tuple[list[Pair], dict]:
    """One pair per item from the model's scores of up to `per_item` distinct samples of it
    (`rows`: the sampling run's results). Returns the pairs and the judge's measurement."""
    by_id = {item.id: item for item in items}
    limit = asyncio.Semaphore(max(1, model.capabilities.max_parallel))

    async def score(item: Item, text: str) -> float | None:
        request = CRITIQUE[item.kind].format(question=item.view.question, answer=text)
        async with limit:
            reply = (await model.generate([{"role": "user", "content": request}], params))[0]
        return read_score(reply.text)

    async def one(row) -> list[tuple[str, bool, float | None]]:
        item = by_id[row.item]
        distinct: dict[str, bool] = {}
        for attempt, grade in zip(row.trajectory.attempts, row.grades):
            text = usable_reply(attempt.text, attempt.finish_reason)
            if text is not None and attempt.answer is not None and len(distinct) < per_item:
                distinct.setdefault(text, grade.correct)  # grade: measurement only, never in a pair's choice
        scores = await asyncio.gather(*(score(item, text) for text in distinct))
        return [(text, right, s) for (text, right), s in zip(distinct.items(), scores)]

    rows = [r for r in rows if r.item in by_id]
    judged = await asyncio.gather(*(one(r) for r in rows))
    pairs, agree, inverted, same, concordant, comparisons, judgments, unread = [], 0, 0, 0, 0.0, 0, 0, 0
    for row, samples in zip(rows, judged):
        judgments += len(samples)
        scored = [s for s in samples if s[2] is not None]
        unread += len(samples) - len(scored)
        for text_r, right_r, s_r in scored:  # AUC within the item: a right sample against a wrong one
            for text_w, right_w, s_w in scored:
                if right_r and not right_w:
                    comparisons += 1
                    concordant += 1.0 if s_r > s_w else 0.5 if s_r == s_w else 0.0
        if len(scored) < 2:
            continue
        best, worst = max(scored, key=lambda s: s[2]), min(scored, key=lambda s: s[2])
        if best[2] == worst[2]:
            continue
        agree += best[1] and not worst[1]
        inverted += worst[1] and not best[1]
        same += best[1] == worst[1]
        pairs.append(Pair(prompt=list(by_id[row.item].view.messages), chosen=best[0], rejected=worst[0],
                          item_id=row.item, source="self-judged",
                          provenance={"judge_scores": [best[2], worst[2]]}))
    measurement = {"judgments": judgments, "no_score": unread / judgments if judgments else None,
                   "auc": concordant / comparisons if comparisons else None, "comparisons": comparisons,
                   "pairs": len(pairs), "pairs_as_the_check": agree, "pairs_backwards": inverted,
                   "pairs_same_verdict": same}
    return pairs, measurement
