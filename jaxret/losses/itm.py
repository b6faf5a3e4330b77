"""Image–text matching: hard-negative sampling and the matching loss (ALBEF §3.2)."""

import jax
import jax.numpy as jnp

from jaxret.losses import gather
from jaxret.losses import logits as logits_lib
from jaxret.losses import row_blocks


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


def hard_negatives(rng, queries, keys, row_ids, temperature, *, axis_name=None):
  """`sample_hard_negatives` of this device's rows against the global batch's keys,
  with similarities queries · keys / temperature (no gradient), a block of rows
  at a time (`row_blocks`: (block × N) similarities, whatever the batch).

  Each row draws with its own key, `fold_in(rng, its row in the global batch)`,
  so the draws depend on neither the device count nor the blocking.

  Args:
    rng: the step's key (the same on every device).
    queries: (n, D) this device's rows; keys: (n, D) this device's share of the
      columns (all-gathered here); row_ids: (n,) image ids of this device's rows.

  Returns:
    (indices (n,) into the global batch, has_negative (n,)), as `sample_hard_negatives`.
  """
  keys = gather.all_gather_no_grad(keys, axis_name).astype(jnp.float32)
  column_ids = gather.all_gather(row_ids, axis_name)
  rows = gather.local_offset(row_ids.shape[0], axis_name) + jnp.arange(row_ids.shape[0])

  def draw(block, shared):
    queries, row_ids, rows = block
    keys, temperature = shared
    similarities = jax.lax.stop_gradient(queries).astype(jnp.float32) @ keys.T / temperature
    one_row = lambda row, sims, row_id: sample_hard_negatives(
        jax.random.fold_in(rng, row), sims[None], row_id[None], column_ids)
    indices, has_negative = jax.vmap(one_row)(rows, similarities, row_ids)
    return indices[:, 0], has_negative[:, 0]

  return row_blocks.block_map(draw, (queries, row_ids, rows),
                              (keys, jax.lax.stop_gradient(temperature)))


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
