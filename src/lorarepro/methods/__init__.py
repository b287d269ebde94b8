"""Training-method components (Flat-LoRA's weight perturbation, ...)."""
