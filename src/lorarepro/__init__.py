"""lorarepro: reproduce LoRA-family fine-tuning research (Flat-LoRA, ICML 2025) end to end."""

__version__ = "0.1.0"
