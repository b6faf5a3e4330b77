"""Row-wise softmax pieces every loss shares: masking columns out, cross-entropy, top-1.

A row of logits scores one query against its candidate columns (texts, images,
queued keys). Columns that must not count (an empty queue slot, a candidate a
small batch could not fill, a copy of the query's own image) take
`MASKED_LOGIT`: exp() underflows to exactly 0, so they take no part in a
softmax, and being finite, 0 × it stays 0 in a soft cross-entropy (where −inf
would give NaN).
"""

import jax
import jax.numpy as jnp

MASKED_LOGIT = -1e30


def masked_logits(logits, valid):
  """`logits` with `MASKED_LOGIT` wherever `valid` (broadcast against it) is False."""
  return jnp.where(valid, logits, MASKED_LOGIT)


def soft_cross_entropy_sum(logits, targets):
  """Σ_rows −Σ_cols targets · log_softmax(logits)."""
  return -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1))


def top1_hits(logits, targets):
  """(rows,) bool: the row's highest logit is on a column with a positive target
  (any column of the row's image id, not only one designated column)."""
  best = jnp.argmax(logits, axis=-1)
  return jnp.take_along_axis(targets, best[..., None], axis=-1)[..., 0] > 0


def top1_matches(logits, labels):
  """(...) bool: the highest logit of each row is at `labels` (a column index,
  an array of them, or another score's argmax)."""
  return jnp.argmax(logits, axis=-1) == labels
