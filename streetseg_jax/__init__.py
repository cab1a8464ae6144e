"""streetseg_jax: semantic segmentation of street-level images in JAX."""
__version__ = "0.1.0"
