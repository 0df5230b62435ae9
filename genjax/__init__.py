"""genjax: JAX-native LM pre-training with in-step generalization monitors.

Importing genjax does nothing global: no flags, no jax config, no device queries.
"""

__version__ = "0.1.0"
