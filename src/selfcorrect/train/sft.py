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
    try:
        import torch
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer
    except ImportError:
        raise ConfigError("training needs torch, transformers, peft and trl",
                          "pip install torch==2.13.0 'selfcorrect[train]'") from None
    if len(dataset) == 0:
        raise ConfigError("no training examples", "sample more, or relax the filters that build the data")
    steps_dir = out / "steps"
    gpu = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(steps_dir), num_train_epochs=settings.epochs, per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, lr_scheduler_type="cosine", warmup_steps=0.05,
        logging_steps=5, save_strategy="steps", save_steps=settings.save_steps, save_total_limit=2,
        report_to=[], seed=settings.seed, max_length=settings.max_length, completion_only_loss=True,
        bf16=gpu and torch.cuda.is_bf16_supported(), use_cpu=not gpu, dataloader_num_workers=0,
        disable_tqdm=not progress)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft = (LoraConfig(r=settings.rank, lora_alpha=2 * settings.rank, lora_dropout=0.0, target_modules="all-linear",
                       task_type="CAUSAL_LM") if settings.lora else None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft)
    resume = any(steps_dir.glob("checkpoint-*"))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.perf_counter() - started
    trainer.save_model(str(out / "model"))
    tokenizer.save_pretrained(out / "model")
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * settings.epochs
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"loss": result.training_loss, "log": losses, "steps": result.global_step, "seconds": round(seconds, 1),
            "examples": len(dataset), "tokens": int(tokens), "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
            "resumed": resume, "lora": settings.lora}


def train_dpo(base: Path, dataset, out: Path, settings: SFTSettings = SFTSettings(), *, beta: float = 0.1,
              progress: bool = True) -> dict:
    """DPO on `dataset` (prompt, chosen, rejected) from the checkpoint at `base`; the result
    goes to `out/model` as `train_sft`'s does."""
    try:
        import torch
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import DPOConfig, DPOTrainer
    except ImportError:
        raise ConfigError("training needs torch, transformers, peft and trl",
                          "pip install torch==2.13.0 'selfcorrect[train]'") from None
    if len(dataset) == 0:
        raise ConfigError("no preference pairs", "sample more: a pair needs a right and a wrong reply to one prompt")
    gpu = torch.cuda.is_available()
    args = DPOConfig(
        output_dir=str(out / "steps"), num_train_epochs=settings.epochs, per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, beta=beta, logging_steps=1, save_strategy="steps",
        save_steps=settings.save_steps, save_total_limit=2, report_to=[], seed=settings.seed,
        max_length=settings.max_length, bf16=gpu and torch.cuda.is_bf16_supported(), use_cpu=not gpu,
        dataloader_num_workers=0, disable_tqdm=not progress)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft = (LoraConfig(r=settings.rank, lora_alpha=2 * settings.rank, lora_dropout=0.0, target_modules="all-linear",
                       task_type="CAUSAL_LM") if settings.lora else None)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft)
    resume = any((out / "steps").glob("checkpoint-*"))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.save_model(str(out / "model"))
    tokenizer.save_pretrained(out / "model")
    history = trainer.state.log_history
    return {"loss": result.training_loss, "steps": result.global_step, "seconds": round(time.perf_counter() - started, 1),
            "pairs": len(dataset), "resumed": resume, "lora": settings.lora,
            "log": [e["loss"] for e in history if "loss" in e],
            "reward_accuracy": [e["rewards/accuracies"] for e in history if "rewards/accuracies" in e]}
