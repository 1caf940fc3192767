"""Backbones, differentiable Grad-CAM, the SDTG text head and the MEGL module."""
