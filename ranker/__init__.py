"""Language Ranker: rank sampled LLM candidates with the base model's own hidden states."""

__version__ = "0.1.0"
