"""LoRA-SAM: the model, its adapters, losses and the training loop."""
