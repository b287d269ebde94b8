"""Checkpoints: saving a trained run, loading it back (safetensors only), and the deterministic
settings every job that trains or evaluates runs under.

A LoRA-family run is saved in PEFT's format (adapter_config.json + adapter_model.safetensors; PiSSA
and LoRA-GA as a plain LoRA delta against the original backbone, see methods.lora.save) and loaded
as `PeftModel.from_pretrained(backbone, checkpoint)`; full fine-tuning with `save_pretrained`.
Each checkpoint follows the Hub's conventions: a filled model card (README.md: task, method, the
run's metrics, how to load it), PEFT's `task_type` and the base model's hub id where it has one.
Weights never come from a pickle: PEFT ignores `use_safetensors` and falls back to a `.bin`
adapter, so `load` refuses a checkpoint without its safetensors file, or with any pickle file
beside it, before PEFT or transformers sees the directory.

The package, by concern: `files` (what a checkpoint directory may hold: safetensors, never pickles;
the backbone's completion marker), `saving` (writing a run's checkpoint in the Hub's conventions),
`card` (its model card), `loading` (the deterministic settings, loading a run back, evaluating it again).
"""

from lorarepro.domain.checkpoints.files import PICKLE, UnsafeCheckpoint, backbone_marker, pickle_files, refuse_pickle
from lorarepro.domain.checkpoints.loading import backbone_weights, deterministic, evaluate_saved, load, load_backbone
from lorarepro.domain.checkpoints.saving import save

__all__ = ["PICKLE", "UnsafeCheckpoint", "backbone_marker", "backbone_weights", "deterministic", "evaluate_saved",
           "load", "load_backbone", "pickle_files", "refuse_pickle", "save"]
