"""The machinery around a run: its folder and lock, resuming, files written whole, W&B, errors."""
