"""Image–text matching: hard-negative sampling and the matching loss (ALBEF §3.2)."""

import jax
import jax.numpy as jnp

from jaxret.losses import gather
from jaxret.losses import logits as logits_lib


def sample_hard_negatives(rng, similarities, row_ids, column_ids):
  """For each row i, one column j drawn with probability softmax_j(s_ij) over
  the columns whose image id differs from row i's (never the same image).

  Call it on the GLOBAL batch with the step's rng (the same on every device),
  so the draws do not depend on the device count.

  Args:
    rng: a PRNG key.
    similarities: (N, M) logits, e.g. ITC similarities / temperature.
    row_ids: (N,) image ids of the rows; column_ids: (M,) of the columns.

  Returns:
    (indices (N,) int32, has_negative (N,) bool). A row whose columns all
    share its id (a batch of one image) has no negative: its index is 0 and
    `has_negative` False, and the loss must give it weight 0.
  """
  allowed = row_ids[:, None] != column_ids[None, :]
  logits = logits_lib.masked_logits(similarities.astype(jnp.float32), allowed)
  has_negative = allowed.any(axis=1)
  indices = jax.random.categorical(rng, logits, axis=-1)
  return jnp.where(has_negative, indices, 0).astype(jnp.int32), has_negative


def itm_loss(logits, labels, weights, *, axis_name=None):
  """Weighted two-way cross-entropy over the global batch of scored pairs:

    L_itm = Σ_i w_i · −log softmax(logits_i)[y_i] / Σ_i w_i,

  y_i = 1 for a matching pair, 0 for a negative; w_i = 0 drops a pair (a
  negative that could not be drawn). Sharded: psum of the sums.

  Args:
    logits: (n, 2) this device's pairs; labels: (n,) int; weights: (n,) float.
  """
  weights = weights.astype(jnp.float32)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), 1)[:, 0]
  correct = logits_lib.top1_matches(logits, labels) * weights
  total, weight, correct = gather.psum(
      (jnp.sum(weights * nll), jnp.sum(weights), jnp.sum(correct)), axis_name)
  weight = jnp.maximum(weight, 1.0)
  loss = total / weight
  return loss, {'itm_loss': loss, 'itm_accuracy': correct / weight}
