"""A recipe: what `selfcorrect improve` hands the user (DIR/recipe.json): the accepted
checkpoint, the strategy to serve it with and its sampling parameters, and what it was
measured to do on held-out items against the base's best strategy. `--model recipe:DIR`
loads its checkpoint, and `eval`/`serve --recipe DIR` run its strategy when none is named.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from selfcorrect.errors import ConfigError
from selfcorrect.models.lineage import Checkpoint

RECIPE_FILE = "recipe.json"


class Measured(BaseModel):
    """A strategy on the held-out side."""

    strategy: str
    accuracy: float
    interval: tuple[float, float]
    items: int
    tokens_per_item: float


class Confirmation(Measured):
    """The served system measured once, when the run ended, on items set aside that nothing
    was sampled, accepted, stopped or chosen on; beside it, the base's best strategy on them."""

    base: Measured


class Recipe(BaseModel):
    task: str
    round: int = Field(ge=0)  # the accepted round (0: the base itself was never beaten)
    checkpoint: Checkpoint
    strategy: str
    sampling: dict  # temperature, top_k, max_tokens: as it was measured
    labels: str  # none (label-free), gold, or feedback (served traffic)
    oracle: bool  # gold answers shaped the training data
    feedback_labelled: bool = False  # clients' answers shaped the training data (served traffic)
    # the served system against the base's on the confirmation side, nothing chosen on it:
    # {"against": measured_against(the base), "items", "wrong_to_right",
    # "right_to_wrong"}; a canary against that base starts from these pairs (serve/canary.py)
    evidence: dict | None = None
    heldout: Measured  # the served system
    base_best: Measured  # the base's best strategy on the same items
    measured_at: float
    # the content hash of the checkpoint's weights (and adapter) it was measured with, and the
    # fingerprint of the GGUF it is served from: a recipe whose files changed is refused
    weights: str | None = None
    gguf: str | None = None
    confirmation: Confirmation | None = None  # None: no split was set aside, or the run has not ended


def measured_against(base: Checkpoint) -> list[str]:
    """How the base that evidence was measured against is recognised where a model serves: its
    weights' content hash, its GGUF's fingerprint, and `tensors:` its GGUF's tensors hash, which
    also matches another file of the same weights (the embedded model's own Q8_0, which a
    server runs, is one)."""
    from selfcorrect.models.embedded.files import gguf_tensors_hash

    weights, gguf = checkpoint_identity(base)
    tensors = gguf_tensors_hash(Path(base.gguf)) if gguf else None
    return [f for f in (weights, gguf, tensors and f"tensors:{tensors}") if f]


def is_measured_against(against: list[str], model) -> bool:
    """Whether `model` (an engine) is that base: its identity names one of the fingerprints, or
    the GGUF file it runs holds the same tensors."""
    from selfcorrect.models.embedded.files import gguf_tensors_hash

    if any(f in model.identity for f in against if not f.startswith("tensors:")):
        return True
    tensors = {f.removeprefix("tensors:") for f in against if f.startswith("tensors:")}
    while hasattr(model, "inner"):  # the cache's wrapper (cache.CachedModel)
        model = model.inner
    path = getattr(model, "path", None)
    return bool(tensors) and path is not None and Path(path).suffix == ".gguf" and Path(path).is_file() \
        and gguf_tensors_hash(Path(path)) in tensors


def checkpoint_identity(checkpoint: Checkpoint) -> tuple[str, str | None]:
    """(the weights' content hash, the GGUF's fingerprint where one is written)."""
    from selfcorrect.models.embedded.files import file_fingerprint

    gguf = Path(checkpoint.gguf) if checkpoint.gguf else None
    return checkpoint.content_hash(), file_fingerprint(gguf) if gguf is not None and gguf.is_file() else None


def check_identity(recipe: Recipe, folder: str | Path) -> None:
    """Refuse a recipe whose checkpoint files are no longer what it measured: serving them
    would serve another model under its figures (a recipe written before hashes were kept
    cannot be checked, and is taken as it is)."""
    if recipe.weights is None:
        return
    try:
        weights, gguf = checkpoint_identity(recipe.checkpoint)
    except (OSError, ConfigError) as e:
        raise ConfigError(f"the checkpoint of the recipe in {folder} cannot be read: {e}",
                          "restore its files, or run `selfcorrect improve` again to write a new recipe") from None
    changed = [what for what, had, now in (("weights", recipe.weights, weights), ("GGUF", recipe.gguf, gguf))
               if had is not None and had != now]
    if changed:
        raise ConfigError(f"the recipe in {folder} was measured with other {' and '.join(changed)} than its "
                          f"checkpoint's files hold now (weights {recipe.weights}, now {weights})",
                          "restore the checkpoint it names, or run `selfcorrect improve` again: its figures "
                          "belong to the model it measured")


def write_recipe(recipe: Recipe, folder: Path) -> Path:
    path = folder / RECIPE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(recipe.model_dump_json(indent=2))
    tmp.replace(path)  # a kill never leaves half a recipe
    return path


def read_recipe(folder: str | Path) -> Recipe:
    path = Path(folder).expanduser()
    path = path / RECIPE_FILE if path.is_dir() or not path.suffix else path
    if not path.is_file():
        raise ConfigError(f"no recipe at {path}", "give the --out folder of a finished `selfcorrect improve`")
    try:
        return Recipe.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as e:
        raise ConfigError(f"{path} is not a recipe: {str(e).splitlines()[0]}",
                          "write it again with `selfcorrect improve` (it resumes and rewrites recipe.json)") from None
