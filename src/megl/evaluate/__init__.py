"""Metrics of the MEGL paper and of the faithfulness literature, and the evaluate stage."""
