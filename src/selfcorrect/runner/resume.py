"""Resume checks: a resumed run goes on with the model it was drawn from, and with another
code version, other prompts or another pool cap only as the run's record then says."""

from __future__ import annotations

import time

from selfcorrect.errors import ConfigError
from selfcorrect.models.base import Model
from selfcorrect.store import Run, Store


def check_resume(store: Store, run: Run, models: dict[str, Model | None], version: str, prompts: dict[str, str],
                 force: bool) -> None:
    """Refuse another model (`models`: role to model); refuse another code `version` or other
    prompts unless `force`, and then record both in the run."""
    config = run.config
    for role, model in models.items():
        had = config.get(role)
        if had and model is not None and had != model.identity:
            raise ConfigError(
                f"run {run.run_id} was drawn from {role} {had}; this {role} is {model.identity}",
                f"resume it with the same --{role}, or start a new run: one run holds one model's draws")
    changed = []
    if version != run.code_version:
        changed.append(f"code version {run.code_version} (now {version})")
    differing = sorted(k for k in set(prompts) | set(run.prompt_hashes) if prompts.get(k) != run.prompt_hashes.get(k))
    if differing:
        changed.append(f"other prompts for {', '.join(differing)}")
    if not changed:
        return
    if not force:
        raise ConfigError(f"run {run.run_id} was made with {'; '.join(changed)}",
                          "start a new run, or pass --force to go on (the run then records both)")
    config.setdefault("resumed_with", []).append({"code_version": version, "prompt_hashes": prompts, "at": time.time()})
    store.update_run_config(run.run_id, config)


def record_pool_cap(config: dict, pool_cap: int, recorded: int) -> None:
    """A resumed run given another pool cap records it in its config."""
    config["spec"]["pool_cap"] = pool_cap
    config.setdefault("resumed_with", []).append({"pool_cap": pool_cap, "pool_cap_before": recorded, "at": time.time()})
