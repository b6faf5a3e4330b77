"""Captioning likelihoods and the bidirectional captioning loss (Miech et al. 2021)."""

import jax
import jax.numpy as jnp

from jaxret.losses import gather


def token_log_likelihood(logits, targets, target_mask):
  """Σ_t mask_t · log softmax(logits_t)[target_t] per row: log p(caption), padding excluded.

  logits: (P, T, V); targets, target_mask: (P, T). Returns (P,) float32.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return jnp.sum(picked * target_mask, axis=-1)


def reverse_captions(tokens, mask):
  """Reverses each caption's words, keeping its first and last real tokens in place.

  `[CLS] w1 .. wn [SEP] pad..` -> `[CLS] wn .. w1 [SEP] pad..`, so the backward
  decoder reads the caption right to left with the same start and end tokens.
  """
  length = jnp.sum(mask > 0, axis=1, keepdims=True)
  positions = jnp.arange(tokens.shape[1])[None, :]
  inner = (positions >= 1) & (positions <= length - 2)
  source = jnp.where(inner, length - 1 - positions, positions)
  return jnp.take_along_axis(tokens, source, axis=1)


def captioning_loss(log_p_forward, log_p_backward, *, axis_name=None):
  """L = −1/N Σ_i h(x_i, y_i), h = log p_fwd(y|x) + log p_bwd(y|x), over the global batch.

  Each device holds its rows' log-likelihoods; sums are psum-ed.
  """
  score = log_p_forward + log_p_backward
  count = gather.psum(jnp.float32(score.shape[0]), axis_name)
  total, forward, backward = gather.psum(
      (jnp.sum(score), jnp.sum(log_p_forward), jnp.sum(log_p_backward)), axis_name)
  return -total / count, {'log_p_forward': forward / count, 'log_p_backward': backward / count}
