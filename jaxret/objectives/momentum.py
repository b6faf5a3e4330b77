"""Momentum (EMA) copies of parameters and ramped loss weights, for MoCo-style objectives."""

import jax
import jax.numpy as jnp


def copy(params):
  """A momentum copy: at initialisation the momentum model equals the model."""
  return jax.tree.map(jnp.array, params)


def ema(momentum_params, params, momentum):
  """θ' ← m·θ' + (1 − m)·θ, leaf by leaf (MoCo, ALBEF); no gradient flows into θ'."""
  params = jax.lax.stop_gradient(params)
  return jax.tree.map(lambda ema, online: (momentum * ema + (1 - momentum) * online).astype(
      ema.dtype), momentum_params, params)


def ramp(step, warmup_steps, final_value):
  """`final_value` · min(1, step / warmup_steps): ALBEF's α warm-up (0 at step 0)."""
  if warmup_steps <= 0:
    return jnp.asarray(final_value, jnp.float32)
  return final_value * jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup_steps)
