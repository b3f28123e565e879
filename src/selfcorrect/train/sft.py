"""Fine-tuning with TRL: supervised (SFTTrainer) and on preference pairs (DPOTrainer, the
LoRA adapter switched off as the reference model). Supervised fine-tuning: LoRA by default (PEFT), full fine-tuning as
an option, the loss on completions only, checkpoints every `save_steps` so that a killed job
resumes where it stopped. On CPU it runs in fp32 (`bf16=False`); with several GPUs, run the
same job under `accelerate launch` (docs/train.md)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from selfcorrect.errors import ConfigError


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
    seconds = metrics["seconds"]
    return {**metrics, "examples": len(dataset), "tokens": int(tokens),
            "tokens_per_s": round(tokens / seconds, 1) if seconds else None}


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
    try:
        import torch
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ConfigError("training needs torch, transformers, peft and trl",
                          "pip install torch==2.13.0 'selfcorrect[train]'") from None
    steps_dir = out / "steps"
    gpu = torch.cuda.is_available()
    common = dict(
        output_dir=str(steps_dir), num_train_epochs=settings.epochs, per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, logging_steps=1, save_strategy="steps", save_steps=settings.save_steps,
        save_total_limit=2, report_to=[], seed=settings.seed, max_length=settings.max_length,
        bf16=gpu and torch.cuda.is_bf16_supported(), use_cpu=not gpu, dataloader_num_workers=0,
        disable_tqdm=not progress)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft = (LoraConfig(r=settings.rank, lora_alpha=2 * settings.rank, lora_dropout=0.0, target_modules="all-linear",
                       task_type="CAUSAL_LM") if settings.lora else None)
    trainer = make_trainer(common, model, tokenizer, peft)
    resume = any(steps_dir.glob("checkpoint-*"))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.perf_counter() - started
    trainer.save_model(str(out / "model"))
    tokenizer.save_pretrained(out / "model")
    return trainer, {"loss": result.training_loss, "steps": result.global_step, "seconds": round(seconds, 1),
                     "log": [e["loss"] for e in trainer.state.log_history if "loss" in e], "resumed": resume,
                     "lora": settings.lora}
