"""Losses shared by several tasks (feature / perceptual and Gram losses arrive with super-resolution)."""
