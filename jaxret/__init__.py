"""jaxret: text-to-image retrieval in JAX/Flax, from training to serving."""
