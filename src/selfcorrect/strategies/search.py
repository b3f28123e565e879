"""Search over reasoning steps, guided by a step scorer.

A step is what the model writes up to the step delimiter (`step=`: a blank line, a line, or
a sentence). A partial solution is grown by asking the model to continue its own unfinished
reply (a final assistant message: models/base.py), through the normal model protocol and
sample cache, so search draws are shared and resumable like all others. A path is finished
when it states its answer ("The answer is N", "N is the answer"), when the model ends its
reply (its end token, not the delimiter) or has nothing to add, or at the run's token cap.

    beam-search  n partial solutions; each round the n/width best are kept and each grows
                 `width` next steps (Snell et al., 2024; HF search-and-learn)
    dvts         diverse verifier tree search: n/width independent subtrees, each keeping
                 only its best child and growing `width` from it (Beeching et al., 2024)
    mcts         Monte Carlo tree search: UCT selection with weight `exploration`, `children`
                 next steps per expansion, `simulations` playouts, the value backed up

Step scorers (`scorer=`), every one marked with its kind in the record:
    rollout   `rollouts` completions from the partial solution; its value is the share that
              reach an answer the item's checker accepts (external), or, with no checker,
              the answer most of the item's rollouts and finished paths reach (a vote:
              intrinsic; the gold answer is never used)
    self      the model judges the last step: a final `Score: N` line, 0 to 10 (intrinsic)
    prm:PATH  a process reward model trained on the model's own rollouts (train/classifier.py):
              its verdict on the last step (external)
    orm:PATH  an outcome verifier, applied to the solution so far (external)
Aggregation of a path's step scores (`aggregate=`): last, min or product. The finished path
with the best aggregate is returned; its cost per phase: expand (generate), score
(feedback), rollout.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass, field

from selfcorrect.errors import ConfigError
from selfcorrect.memory.recall import with_memory
from selfcorrect.strategies.selection import best_by
from selfcorrect.strategies.session import Outcome, Session
from selfcorrect.strategies.strategy import Strategy
from selfcorrect.tasks.kinds import read
from selfcorrect.trajectory import Attempt, Feedback
from selfcorrect.verify.answers import MARKERS, vote_key
from selfcorrect.verify.learned import learned_scores, parse_learned
from selfcorrect.verify.steps import DELIMITERS
from selfcorrect.verify.scores import SCORE_LINE, read_score

@dataclass(eq=False)
class Node:
    """A partial solution: its steps, how it was scored, and its place in the tree."""

    steps: tuple[str, ...] = ()
    parent: Node | None = None
    done: bool = False
    finish: str = "stop"  # "length": cut at the token cap
    tokens: int = 0  # completion tokens of the whole path
    seconds: float = 0.0
    sample: int = 0
    score: float | None = None  # its last step's score
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    value: float = 0.0  # MCTS: the sum of the values backed up through it

    @property
    def text(self) -> str:
        return "".join(self.steps)

    def path_scores(self) -> list[float | None]:
        node, scores = self, []
        while node is not None and node.steps:
            scores.append(node.score)
            node = node.parent
        return scores[::-1]


@dataclass(eq=False)
class Tree:
    """One item's search: its session, the paths finished so far, and every answer a rollout
    or finished path reached (the vote a rollout value is measured against)."""

    session: Session
    finished: list[Node] = field(default_factory=list)
    answers: Counter = field(default_factory=Counter)


class StepSearch(Strategy):
    """What the three searches share: growing, scoring and finishing partial solutions. A
    strategy object serves many items at once: an item's state lives in its Tree."""

    kinds = frozenset({"math"})
    options = {"step": "sentence", "step_tokens": 64, "scorer": "rollout", "rollouts": 4, "aggregate": "last"}
    bounds = {"step_tokens": (4, 1024), "rollouts": (1, 64)}
    choices = {"step": tuple(DELIMITERS), "aggregate": ("last", "min", "product")}
    prompts = {
        "judge": ("{question}\n\nHere is the start of a solution:\n\n{steps}\n\nIs the last step of it correct? "
                  f"Think briefly, then end with the line: {SCORE_LINE} (N from 0 to 10)."),
    }

    def __init__(self, **options):
        super().__init__(**options)
        if self.scorer not in ("rollout", "self") and parse_learned(self.scorer) is None:
            raise ConfigError(f"{self.name}: unknown scorer {self.scorer!r}", "use rollout, self, prm:PATH or orm:PATH")

    async def run(self, session: Session) -> Outcome:
        tree, root = Tree(session), Node()
        await self.search(tree, root)
        if not tree.finished:
            await self.finish(tree, self.best_unfinished(root))
        await self.score(tree, tree.finished)
        attempts = [self.record(session, node) for node in tree.finished]
        chosen = best_by(attempts, lambda a: a.feedback[-1].score if a.feedback else None)
        scores = {a.feedback[-1].score for a in attempts if a.feedback} - {None}
        no_signal = ("no step score was readable" if not scores else
                     "one path finished: nothing to choose" if len(attempts) == 1 else "every path scored the same")
        return session.done(chosen or attempts[0], "searched" if chosen else "nothing scored", signal=len(scores) > 1,
                            no_signal=no_signal)

    async def search(self, tree: Tree, root: Node) -> None:
        raise NotImplementedError

    # -- growing ---------------------------------------------------------------------------

    def base_messages(self, session: Session) -> list:
        return list(with_memory(session.view.messages, session.remembered()))

    def continuing(self, session: Session, node: Node) -> list:
        messages = self.base_messages(session)
        return [*messages, {"role": "assistant", "content": node.text}] if node.steps else messages

    async def expand(self, tree: Tree, node: Node, k: int, first: int = 0, **params) -> list[Node]:
        """k next steps of `node`, drawn together (samples first … first+k-1 of its prefix)."""
        session = tree.session
        cap = session.ctx.params.max_tokens
        delimiter = DELIMITERS[self.step]
        completions = await session.ask(self.continuing(session, node), phase="generate", n=k, purpose="step",
                                        first=first, stop=(delimiter, *session.view.stop),
                                        max_tokens=max(1, min(self.step_tokens, cap - node.tokens)), **params)
        children = []
        for c in completions:
            child = Node(steps=(*node.steps, c.text), parent=node, tokens=node.tokens + c.completion_tokens,
                         seconds=node.seconds + c.seconds, sample=c.index)
            if not c.text.strip() or c.model_ended or read(session.view, child.text).how in MARKERS:
                child.done = True  # nothing to add, the model ended its reply, or it stated its answer
            elif child.tokens >= cap:
                child.done, child.finish = True, "length"
            elif c.finish_reason == "stop":
                # cut at the delimiter; where the backend does not say whether the model ended
                # its reply instead, the next step shows it (it is then empty)
                child.steps = (*node.steps, c.text + delimiter)
            if child.done:
                tree.finished.append(child)
            children.append(child)
        node.children += children
        return children

    async def finish(self, tree: Tree, node: Node) -> Node:
        """The rest of a partial solution in one continuation, when search ran out before any
        path was finished."""
        session = tree.session
        cap = session.ctx.params.max_tokens
        [c] = await session.ask(self.continuing(session, node), phase="generate", purpose="finish",
                                stop=session.view.stop, max_tokens=max(1, cap - node.tokens))
        child = Node(steps=(*node.steps, c.text), parent=node, done=True, finish=c.finish_reason,
                     tokens=node.tokens + c.completion_tokens, seconds=node.seconds + c.seconds, sample=c.index,
                     score=node.score)
        node.children.append(child)
        tree.finished.append(child)
        return child

    def best_unfinished(self, root: Node) -> Node:
        leaves, stack = [], [root]
        while stack:
            node = stack.pop()
            stack += node.children
            if not node.children and not node.done:
                leaves.append(node)
        return max(leaves, key=lambda n: (self.aggregate_of(n) is not None, self.aggregate_of(n) or 0.0, len(n.steps)))

    # -- scoring ---------------------------------------------------------------------------

    async def score(self, tree: Tree, nodes: list[Node]) -> None:
        """The last step of each node not yet scored (in parallel)."""
        unscored = [n for n in nodes if n.score is None]
        values = await asyncio.gather(*(self.step_value(tree, n) for n in unscored))
        for node, value in zip(unscored, values):
            node.score = value

    async def step_value(self, tree: Tree, node: Node) -> float | None:
        if self.scorer == "self":
            return await self.judged(tree.session, node)
        if self.scorer == "rollout":
            return await self.rolled_out(tree, node)
        scores = await learned_scores(tree.session, self.scorer, node.steps)
        return scores[-1] if scores else None

    async def judged(self, session: Session, node: Node) -> float | None:
        prompt = self.prompts["judge"].format(question=session.view.question, steps=node.text.strip())
        [reply] = await session.ask([{"role": "user", "content": prompt}], phase="feedback", purpose="step judge",
                                    temperature=0.0, max_tokens=96)
        return read_score(reply.text)

    async def rolled_out(self, tree: Tree, node: Node) -> float | None:
        """The share of `rollouts` completions from `node` whose answer is accepted."""
        session = tree.session
        if node.done:
            answers = [read(session.view, node.text, node.finish).answer]
        else:
            cap = session.ctx.params.max_tokens
            completions = await session.ask(self.continuing(session, node), phase="rollout", n=self.rollouts,
                                            purpose="rollout", stop=session.view.stop, max_tokens=max(1, cap - node.tokens))
            answers = [read(session.view, node.text + c.text, c.finish_reason).answer for c in completions]
        keys = [vote_key(a) for a in answers]
        tree.answers.update(k for k in keys if k is not None)
        if session.view.checker:
            verdicts = [await self.checked(session, a) if a is not None else False for a in answers]
            return sum(verdicts) / len(verdicts)
        if not tree.answers:
            return 0.0
        leader = tree.answers.most_common(1)[0][0]
        return sum(k == leader for k in keys) / len(keys)

    async def checked(self, session: Session, answer: str) -> bool:
        result = await session.run(session.view.checker, [f"assert check({answer!r})"])
        return result.passed

    @property
    def aggregation(self) -> str:
        return self.aggregate

    def aggregate_of(self, node: Node) -> float | None:
        scores = [s for s in node.path_scores() if s is not None]
        if not scores:
            return None
        if self.aggregate == "last":
            return node.score
        return min(scores) if self.aggregate == "min" else math.prod(scores)

    def record(self, session: Session, node: Node) -> Attempt:
        """A finished path as an attempt, with its aggregate score as feedback."""
        attempt = session.assemble(node.text, completion_tokens=node.tokens, seconds=node.seconds,
                                   finish_reason=node.finish, sample=node.sample)
        scores = node.path_scores()
        external = parse_learned(self.scorer) is not None or (self.scorer == "rollout" and session.view.checker)
        kind = "external" if external else "intrinsic"
        session.give(attempt, Feedback(
            kind=kind, source=f"step scores ({self.scorer}, {self.aggregation})", score=self.aggregate_of(node),
            text=", ".join("—" if s is None else f"{s:.2f}" for s in scores)))
        return attempt


class _Widths(StepSearch):
    """n partial solutions grown `width` at a time: n must split into n/width groups."""

    def __init__(self, **options):
        super().__init__(**options)
        if self.n % self.width:
            raise ConfigError(f"{self.spec}: n ({self.n}) must be a multiple of width ({self.width})",
                              "n/width partial solutions each grow width next steps")


class BeamSearch(_Widths):
    name = "beam-search"
    options = {"n": 8, "width": 4, "iterations": 8, "lookahead": 0, **StepSearch.options}
    bounds = {"n": (1, 256), "width": (1, 64), "iterations": (1, 64), "lookahead": (0, 8), **StepSearch.bounds}

    async def search(self, tree: Tree, root: Node) -> None:
        frontier = await self.expand(tree, root, self.n)
        for _ in range(self.iterations):
            active = [node for node in frontier if not node.done]
            if not active:
                return
            await self.look_ahead(tree, active)
            kept = sorted(active, key=lambda n: -(self.aggregate_of(n) or 0.0))[: self.n // self.width]
            grown = await asyncio.gather(*(self.expand(tree, node, self.width) for node in kept))
            frontier = [child for children in grown for child in children]

    async def look_ahead(self, tree: Tree, nodes: list[Node]) -> None:
        """Score the nodes; with lookahead k, each by where k more greedy steps take it."""
        if not self.lookahead:
            await self.score(tree, nodes)
            return
        ahead = list(nodes)
        for _ in range(self.lookahead):
            ahead = list(await asyncio.gather(*(self.step_ahead(tree, n) for n in ahead)))
        await self.score(tree, ahead)
        for node, further in zip(nodes, ahead):
            node.score = further.score

    async def step_ahead(self, tree: Tree, node: Node) -> Node:
        if node.done:
            return node
        [child] = await self.expand(tree, node, 1, temperature=0.0)
        return child


class DiverseVerifierTreeSearch(_Widths):
    name = "dvts"
    options = {"n": 8, "width": 4, "iterations": 8, **StepSearch.options}
    bounds = {"n": (1, 256), "width": (1, 64), "iterations": (1, 64), **StepSearch.bounds}

    async def search(self, tree: Tree, root: Node) -> None:
        subtrees = self.n // self.width
        # each subtree its own draws of the first step, so they start apart
        leaves = await asyncio.gather(*(self.expand(tree, root, self.width, first=t * self.width)
                                        for t in range(subtrees)))
        for _ in range(self.iterations):
            active = [[n for n in children if not n.done] for children in leaves]
            if not any(active):
                return
            await self.score(tree, [n for group in active for n in group])
            best = [max(group, key=lambda n: self.aggregate_of(n) or 0.0) for group in active if group]
            leaves = await asyncio.gather(*(self.expand(tree, node, self.width) for node in best))


class MonteCarloTreeSearch(StepSearch):
    name = "mcts"
    # a node's worth is its mean backed-up value, so there is no aggregation to choose
    options = {"simulations": 16, "children": 3, "exploration": 1.0, "depth": 8,
               **{k: v for k, v in StepSearch.options.items() if k != "aggregate"}}
    bounds = {"simulations": (1, 1024), "children": (1, 16), "exploration": (0.0, 10.0), "depth": (1, 64),
              **StepSearch.bounds}

    async def search(self, tree: Tree, root: Node) -> None:
        for _ in range(self.simulations):
            node = root
            while node.children and not node.done:
                node = max(node.children, key=lambda child, parent=node: self.uct(parent, child))
            if not node.done and len(node.steps) < self.depth:
                node = (await self.expand(tree, node, self.children))[0]
            await self.score(tree, [node])
            value = node.score or 0.0
            while node is not None:
                node.visits += 1
                node.value += value
                node = node.parent

    def uct(self, parent: Node, child: Node) -> float:
        if child.visits == 0:
            return math.inf
        return child.value / child.visits + self.exploration * math.sqrt(math.log(parent.visits) / child.visits)

    aggregation = "mean backed-up value"

    def aggregate_of(self, node: Node) -> float | None:
        """A node's mean backed-up value (what the search learned of it), else its own score."""
        return node.value / node.visits if node.visits else node.score
