"""Fine-tuning with TRL: supervised (SFTTrainer) and on preference pairs (DPOTrainer, the
LoRA adapter switched off as the reference model). Supervised fine-tuning: LoRA by default (PEFT), full fine-tuning as
an option, the loss on completions only, checkpoints every `save_steps` so that a killed job
resumes where it stopped. It runs in bf16 autocast where the hardware has bf16 units, fp32
elsewhere (`precision`: precision.py); with several GPUs or machines, a round runs as
`selfcorrect fit` under a launcher such as `accelerate launch` (`fit`, docs/train.md)."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from selfcorrect.errors import ConfigError
from selfcorrect.precision import Precision, dtype, resolve


@dataclass
class SFTSettings:
    lora: bool = True
    rank: int = 16
    learning_rate: float = 2e-4  # LoRA; full fine-tuning wants about 1e-5
    epochs: float = 2.0
    batch_size: int = 8
    max_length: int = 512
    save_steps: int = 50
    seed: int = 0
    precision: Precision = "auto"


def train_sft(base: Path, dataset, out: Path, settings: SFTSettings = SFTSettings(), *,
              progress: bool = True) -> dict:
    """Train on `dataset` (prompt-completion) starting from the checkpoint at `base`; write
    the adapter (LoRA) or the whole model to `out/model`. Resumes from the last checkpoint
    under `out/steps` when there is one. Returns the trainer's metrics."""
    from trl import SFTConfig, SFTTrainer

    if len(dataset) == 0:
        raise ConfigError("no training examples", "sample more, or relax the filters that build the data")
    trainer, metrics = _fit(base, out, settings, progress, lambda common, model, tokenizer, peft: SFTTrainer(
        model=model, args=SFTConfig(**common, lr_scheduler_type="cosine", warmup_steps=0.05, completion_only_loss=True),
        train_dataset=dataset, processing_class=tokenizer, peft_config=peft))
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * settings.epochs
    # a resumed run timed only the steps after its checkpoint: its speed counts only their tokens
    done_here = tokens * (1 - metrics["resumed_from_step"] / metrics["steps"]) if metrics["steps"] else 0
    seconds = metrics["seconds"]
    return {**metrics, "examples": len(dataset), "tokens": int(tokens),
            "tokens_per_s": round(done_here / seconds, 1) if seconds else None}


def fit(start: Path, examples: list, folder: Path, settings: SFTSettings, *, launcher: str = "",
        dpo: bool = False) -> dict:
    """A round's training from `start` into `folder`/model: in this process, or, with a
    `launcher` (`accelerate launch --num_processes 8`, `torchrun --nproc_per_node 8`), as that
    command around `selfcorrect fit` on the round's data file: the same training, data parallel
    over the launcher's processes, with the same checkpoints and resuming."""
    from selfcorrect.train.data import to_dataset, to_preference_dataset, write_jsonl

    if not launcher:
        if dpo:
            return train_dpo(start, to_preference_dataset(examples), folder, settings)
        return train_sft(start, to_dataset(examples), folder, settings)
    data = folder / "data.jsonl"
    if not data.is_file():
        write_jsonl(examples, data)
    return launched(launcher, data, start, folder, settings)


def fit_command(launcher: str, data: Path, start: Path, folder: Path, settings: SFTSettings) -> list[str]:
    """The launcher's command line around `python -m selfcorrect.cli fit`."""
    return [*shlex.split(launcher), "-m", "selfcorrect.cli", "--precision", settings.precision, "fit", str(data),
            "--base", str(start), "--out", str(folder), "--epochs", str(settings.epochs),
            "--learning-rate", str(settings.learning_rate), "--batch-size", str(settings.batch_size),
            "--seed", str(settings.seed), *([] if settings.lora else ["--full"])]


def launched(launcher: str, data: Path, start: Path, folder: Path, settings: SFTSettings) -> dict:
    """Run `fit` under the launcher, its output in folder/launcher.log; the metrics its main
    process printed (one JSON line), or a clear error with the log's last lines."""
    argv = fit_command(launcher, data, start, folder, settings)
    log = folder / "launcher.log"
    folder.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        sink.write(f"$ {shlex.join(argv)}\n".encode())
        sink.flush()
        try:
            done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=sink, check=False)
        except FileNotFoundError:
            raise ConfigError(f"--launcher {launcher!r}: {argv[0]} is not installed here",
                              "install it (pip install accelerate), or give the launcher's full path") from None
        sink.write(done.stdout)
    printed = [_metrics(line) for line in done.stdout.decode(errors="replace").splitlines()]
    printed = [m for m in printed if m is not None]
    if done.returncode != 0 or not printed:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise ConfigError(f"training under {launcher!r} failed (status {done.returncode}); the last lines of {log}:\n"
                          f"{tail}", "read the log; run the command it starts with by hand to see it fail")
    return {**printed[-1], "launcher": launcher}


def _metrics(line: str) -> dict | None:
    """`fit`'s metrics line (the trainer prints its own dicts to the same output)."""
    try:
        metrics = json.loads(line)
    except ValueError:
        return None
    return metrics if isinstance(metrics, dict) and "steps" in metrics else None


def train_dpo(base: Path, dataset, out: Path, settings: SFTSettings = SFTSettings(), *, beta: float = 0.1,
              progress: bool = True) -> dict:
    """DPO on `dataset` (prompt, chosen, rejected) from the checkpoint at `base`; the result
    goes to `out/model` as `train_sft`'s does."""
    from trl import DPOConfig, DPOTrainer

    if len(dataset) == 0:
        raise ConfigError("no preference pairs", "sample more: a pair needs a right and a wrong reply to one prompt")
    trainer, metrics = _fit(base, out, settings, progress, lambda common, model, tokenizer, peft: DPOTrainer(
        model=model, args=DPOConfig(**common, beta=beta), train_dataset=dataset, processing_class=tokenizer,
        peft_config=peft))
    accuracy = [e["rewards/accuracies"] for e in trainer.state.log_history if "rewards/accuracies" in e]
    return {**metrics, "pairs": len(dataset), "reward_accuracy": accuracy}


def _fit(base: Path, out: Path, settings: SFTSettings, progress: bool, make_trainer):
    """What both trainings share: the model and tokenizer from `base`, LoRA or not, CPU or GPU
    settings, checkpoints under `out/steps` and resuming from them, the result in `out/model`."""
    import torch

    tokenizer, model, peft = load_policy(base, settings.lora, settings.rank, precision=settings.precision)
    common = {**trainer_args(out, settings.learning_rate, settings.seed, settings.save_steps, progress,
                             settings.precision),
              # TRL turns it on by default; on a CPU the recomputed forward pass cost 27% of SFT's
              # tokens/s (bench/precision.py), and a small model's activations fit. (GRPO keeps it:
              # its steps are bound by sampling, and it held 5 GB more without.)
              **({} if torch.cuda.is_available() else {"gradient_checkpointing": False}),
              "num_train_epochs": settings.epochs, "per_device_train_batch_size": settings.batch_size,
              "max_length": settings.max_length}
    trainer = make_trainer(common, model, tokenizer, peft)
    result, seconds, resumed_from = run_trainer(trainer, tokenizer, out)
    return trainer, {"loss": result.training_loss, "steps": result.global_step, "seconds": round(seconds, 1),
                     "cpu_share": trainer.cpu_share,
                     "log": [e["loss"] for e in trainer.state.log_history if "loss" in e],
                     "resumed": resumed_from > 0, "resumed_from_step": resumed_from,
                     "lora": settings.lora, "precision": "bf16" if trainer.args.bf16 else "fp32"}


def load_policy(base: Path, lora: bool, rank: int, padding_side: str | None = None, precision: Precision = "auto"):
    """The tokenizer and the model at `base`, and the LoRA config (None: full fine-tuning); a
    clear error when the `train` extra is missing. The weights are fp32 where they are trained
    (full fine-tuning: the master copy), in `precision` where LoRA leaves them frozen (PEFT keeps
    the adapter itself in fp32)."""
    try:
        import datasets  # noqa: F401  (the trainers' data)
        import torch
        import trl  # noqa: F401
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ConfigError("training needs torch, transformers, peft and trl",
                          "pip install torch==2.13.0 'selfcorrect[train]'") from None
    tokenizer = AutoTokenizer.from_pretrained(base, **({"padding_side": padding_side} if padding_side else {}))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # on a CPU in bf16, eager attention: torch's bf16 SDPA backward there took 5x its fp32 time
    # (bench/precision.py; 0.74 s of a 3.3 s LoRA step on the embedded model)
    eager = resolve(precision) == "bf16" and not torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype(precision) if lora else torch.float32,
                                                 **({"attn_implementation": "eager"} if eager else {}))
    peft = (LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear",
                       task_type="CAUSAL_LM") if lora else None)
    return tokenizer, model, peft


def trainer_args(out: Path, learning_rate: float, seed: int, save_steps: int, progress: bool,
                 precision: Precision = "auto") -> dict:
    """The trainer arguments every training shares: checkpoints under `out/steps`, a log line
    every step, the CPU where there is no GPU, and bf16 autocast where `precision` resolves to
    bf16 (fp32 master weights and optimizer state: precision.py)."""
    import torch

    gpu = torch.cuda.is_available()
    return {"output_dir": str(out / "steps"), "learning_rate": learning_rate, "logging_steps": 1,
            "save_strategy": "steps", "save_steps": save_steps, "save_total_limit": 2, "report_to": [], "seed": seed,
            "bf16": resolve(precision, gpu=gpu) == "bf16", "use_cpu": not gpu, "dataloader_num_workers": 0,
            "disable_tqdm": not progress}


def cpu_share(cpu_seconds: float, seconds: float) -> float | None:
    """The share of its threads' time a job got: its CPU seconds over wall seconds times torch's
    threads. Near 1 on a quiet machine; well below when other jobs share the cores, which is
    what slowed a round's training to half the benchmark's tokens/s (BENCHMARKS.md, issue 35)."""
    import torch

    return round(cpu_seconds / (seconds * torch.get_num_threads()), 2) if seconds > 0 else None


def run_trainer(trainer, tokenizer, out: Path):
    """Train, from the last checkpoint under `out/steps` when a killed run left one; save the
    model and tokenizer to `out/model`. Returns (TRL's result, seconds of this process's
    training, the step it resumed from: 0 when it started afresh)."""
    steps = [int(p.name.split("-")[1]) for p in (out / "steps").glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    resumed_from = max(steps, default=0)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = trainer.train(resume_from_checkpoint=True if resumed_from else None)
    seconds = time.perf_counter() - started
    trainer.cpu_share = cpu_share(time.process_time() - cpu_started, seconds)
    trainer.save_model(str(out / "model"))  # the main process only, under a launcher
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out / "model")
    return result, seconds, resumed_from
