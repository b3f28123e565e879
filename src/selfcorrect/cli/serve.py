"""`selfcorrect serve` and `serve-key`: the OpenAI-compatible server (docs/serve.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from selfcorrect.cli.app import Critic, MemoryExplore, MemoryShow, Retriever, app, check_share, check_show, err
from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError


@app.command()
def serve(
    ctx: typer.Context,
    strategy: Annotated[Optional[str], typer.Option("--strategy", "-s", help="for requests that name none "
                                                    "(default: the recipe's, or single)")] = None,
    recipe: Annotated[Optional[Path], typer.Option(help="serve what `selfcorrect improve` accepted: its checkpoint "
                                                   "and strategy (DIR/recipe.json); a new recipe.json there is "
                                                   "loaded and swapped in without a failed request")] = None,
    memory: Annotated[Optional[str], typer.Option(help="an error memory namespace: lessons shown, feedback learned")] = None,
    memory_show: MemoryShow = "gated",
    memory_explore: MemoryExplore = 0.2,
    critic: Critic = None,
    retriever: Retriever = "bm25",
    host: Annotated[str, typer.Option(help="the address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="the port")] = 8000,
    api_keys: Annotated[Optional[Path], typer.Option(help="a keys file (`selfcorrect serve-key NAME >> FILE`)")] = None,
    rate_limit: Annotated[float, typer.Option(help="requests per minute per key")] = 600.0,
    max_body: Annotated[int, typer.Option(help="the largest request body in bytes")] = 1_000_000,
    timeout: Annotated[float, typer.Option(help="seconds a strategy may run before the best answer so far returns")] = 600.0,
    cors: Annotated[Optional[str], typer.Option(help="comma-separated origins allowed by CORS (default: off)")] = None,
    alias: Annotated[Optional[list[str]], typer.Option(help="another model name requests may use (repeat it); the "
                                                       "model's identity, its --model spec and `default` always "
                                                       "work, any other name is answered 404")] = None,
    open_metrics: Annotated[bool, typer.Option("--open-metrics", help="serve /metrics without a key when keys are "
                                               "on (for a scraper inside your network)")] = False,
    canary: Annotated[Optional[float], typer.Option(help="with --recipe or --improve: a new recipe first answers this "
                                                         "share of requests in the shadow, and is promoted only on the "
                                                         "evidence (0: swap at once; default 0, and 0.2 with --improve)")] = None,
    canary_margin: Annotated[float, typer.Option(help="promote a candidate not worse than the incumbent by more than "
                                                      "this much accuracy (the non-inferiority margin)")] = 0.02,
    canary_flip_cap: Annotated[float, typer.Option(help="... and with at most this share of its trials turned "
                                                        "right into wrong")] = 0.15,
    improve: Annotated[Optional[Path], typer.Option(help="improve on the traffic in the background, into this folder: "
                                                         "every --improve-every requests a cycle of `improve --task "
                                                         "served:STORE`, its recipe put on trial by the canary")] = None,
    improve_every: Annotated[int, typer.Option(help="answered requests between improve cycles")] = 200,
    improve_minutes: Annotated[Optional[float], typer.Option(help="or a cycle this often, when there is new traffic")] = None,
    improve_threads: Annotated[int, typer.Option(help="threads a cycle uses (the server keeps the rest)")] = 1,
    improve_args: Annotated[str, typer.Option(help="more `improve` options for each cycle, e.g. "
                                                   "'--labels feedback --chains 4'")] = "",
    improve_launcher: Annotated[str, typer.Option(help="train each cycle under this launcher (improve --launcher)")] = "",
    improve_command: Annotated[str, typer.Option(help="run each cycle as this command instead (a batch job that waits "
                                                      "for its end), with {out} {task} {store} {python}; it must "
                                                      "leave an improve run's recipe.json and report.json in {out}")] = "",
) -> None:
    """An OpenAI-compatible server whose answers are a strategy's (docs/serve.md)."""
    import uvicorn

    from selfcorrect.serve.app import ServeConfig, create_app
    from selfcorrect.serve.keys import read_keys

    settings: Settings = ctx.obj
    schedule = None
    if improve is not None:
        from selfcorrect.serve.improver import ImproveSchedule

        if recipe is not None:
            raise ConfigError("--improve serves its own recipes (FOLDER/incumbent, FOLDER/serving)", "drop --recipe")
        if improve_every < 1 or improve_threads < 1:
            raise ConfigError("--improve-every and --improve-threads must be at least 1", "give a positive count")
        schedule = ImproveSchedule(folder=str(improve), every=improve_every, minutes=improve_minutes,
                                   threads=improve_threads, args=improve_args, launcher=improve_launcher,
                                   command=improve_command)
        canary = 0.2 if canary is None else canary
        if (improve / "incumbent" / "recipe.json").is_file():  # promoted before a restart: it serves again
            recipe = improve / "incumbent"
    canary = canary or 0.0
    if recipe is not None:
        from selfcorrect.models.recipe import read_recipe

        measured = read_recipe(recipe)  # a missing or broken recipe fails before anything loads
        settings = settings.model_copy(update={"model": f"recipe:{recipe}"})
        from_recipe = strategy is None  # the recipe's strategy, and a swapped-in recipe's after it
        strategy = strategy or measured.strategy
        err.print(f"recipe {escape(str(recipe))}: round {measured.round}, {escape(measured.strategy)} measured "
                  f"{100 * measured.heldout.accuracy:.1f}% held out on {escape(measured.task)}")
    strategy = strategy or "single"
    sampling = {"temperature": measured.sampling["temperature"]} if recipe is not None and "temperature" in measured.sampling else {}
    for flag, value in (("--port", port), ("--rate-limit", rate_limit), ("--max-body", max_body), ("--timeout", timeout)):
        if value <= 0 or (flag == "--port" and value > 65535):
            raise ConfigError(f"{flag} {value} is out of range", "give a positive number" +
                              (" up to 65535" if flag == "--port" else ""))
    keys = read_keys(api_keys) if api_keys else None
    if keys is None and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning[/]: listening on {escape(host)} with no API keys: anyone who reaches it can use it")
    config = ServeConfig(strategy=strategy, memory=memory, memory_show=check_show(memory_show),
                         memory_explore=check_share("--memory-explore", memory_explore), critic=critic, retriever=retriever, keys=keys, rate_limit=rate_limit,
                         max_body=max_body, timeout=timeout, cors=[o for o in (cors or "").split(",") if o],
                         aliases=alias or [], open_metrics=open_metrics,
                         recipe=str(recipe) if recipe is not None else None,
                         recipe_strategy=recipe is not None and from_recipe, canary=check_share("--canary", canary),
                         canary_margin=check_share("--canary-margin", canary_margin),
                         canary_flip_cap=check_share("--canary-flip-cap", canary_flip_cap), **sampling)
    config.improve = schedule
    if canary and recipe is None and schedule is None:
        raise ConfigError("--canary puts a new recipe on trial, and there is no --recipe to watch", "add --recipe DIR")
    settings.store.parent.mkdir(parents=True, exist_ok=True)
    application = create_app(settings, config)  # checks the strategy and retriever before it listens
    err.print(f"serving {escape(strategy)} on http://{host}:{port}/v1 (model {escape(settings.model)}"
              + (f", memory {escape(memory)}" if memory else "") + ")")
    uvicorn.run(application, host=host, port=port, log_level="warning", timeout_keep_alive=5, limit_concurrency=1024)


@app.command(name="serve-key")
def serve_key(name: Annotated[str, typer.Argument(help="who the key is for (letters, digits, - and _)")]) -> None:
    """A new API key: prints the key once (give it to the client) and, on stdout, the line for
    the keys file (its hash: the key itself is never stored)."""
    import re

    from selfcorrect.serve.keys import new_key

    if not re.fullmatch(r"[\w-]{1,64}", name):
        raise ConfigError(f"key name {name!r} is not usable", "use letters, digits, - and _ (up to 64)")
    key, digest = new_key()
    err.print(f"API key for {escape(name)} (shown once): {key}")
    print(f"{name} {digest}")
