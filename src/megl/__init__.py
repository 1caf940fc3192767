"""megl: Multimodal Explanation-Guided Learning, as a reproducible pipeline."""

__version__ = "0.1.0"
