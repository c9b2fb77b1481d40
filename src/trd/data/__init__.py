"""Data: file readers, dataset layouts, 3D preprocessing and the synthetic dataset."""
