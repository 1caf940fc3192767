"""Raw-format readers, the synthetic benchmark, extraction to a manifest, saliency aggregation."""
