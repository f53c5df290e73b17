"""Model adapters: the only code that touches HF model objects."""
