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


class Recipe(BaseModel):
    task: str
    round: int = Field(ge=0)  # the accepted round (0: the base itself was never beaten)
    checkpoint: Checkpoint
    strategy: str
    sampling: dict  # temperature, top_k, max_tokens: as it was measured
    labels: str  # none (label-free) or gold
    oracle: bool  # gold answers shaped the training data
    heldout: Measured  # the served system
    base_best: Measured  # the base's best strategy on the same items
    measured_at: float


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
