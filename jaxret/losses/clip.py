"""CLIP's symmetric InfoNCE loss with positives defined by image id."""

import jax
from jax import lax
import jax.numpy as jnp

from jaxret.losses import gather


def _block_stats(rows, columns, row_ids, column_ids, logit_scale):
  """One (n × n) block's part of each row's softmax: log Σ exp, the sum and count of
  the positive logits, the highest logit and whether its column is a positive (the
  last two for top-1 only, so no gradient flows through them)."""
  logits = logit_scale * rows @ columns.T
  positives = row_ids[:, None] == column_ids[None, :]
  scores = lax.stop_gradient(logits)
  return {'log_sum_exp': jax.nn.logsumexp(logits, axis=1),
          # A product, not a select: XLA would keep a broadcast (n × n) zero for the select.
          'positive_sum': jnp.sum(logits * positives, axis=1),
          'positives': jnp.sum(positives, axis=1).astype(jnp.float32),
          'best': jnp.max(scores, axis=1),
          'hit': column_ids[jnp.argmax(scores, axis=1)] == row_ids}


def _combine(stats, block):
  """Row statistics over the columns seen so far and one more block (an online log Σ exp)."""
  better = block['best'] > stats['best']
  return {'log_sum_exp': jnp.logaddexp(stats['log_sum_exp'], block['log_sum_exp']),
          'positive_sum': stats['positive_sum'] + block['positive_sum'],
          'positives': stats['positives'] + block['positives'],
          'best': jnp.maximum(stats['best'], block['best']),
          'hit': jnp.where(better, block['hit'], stats['hit'])}


def _ring_row_stats(rows, columns, ids, logit_scale, axis_name):
  """Each of this device's rows against every device's columns: its own columns first,
  then those of the device before it on the ring, and so on (the columns and their ids
  are passed one place around the ring after each block), the row statistics combined
  block by block. Every block is computed inside the loop and rematerialised in the
  backward pass (`jax.checkpoint`), so forward and backward hold one (n × n) block of
  logits and its softmax at a time, not one per device."""

  @jax.checkpoint
  def add_block(stats, columns, column_ids):
    return _combine(stats, _block_stats(rows, columns, ids, column_ids, logit_scale))

  def visit_chunk(carry, _):
    stats, columns, column_ids = carry
    stats = add_block(stats, columns, column_ids)
    # The last pass brings every device its own columns back, unused (n × D numbers).
    return (stats, *gather.rotate((columns, column_ids), axis_name)), None

  row = rows[:, 0]  # `full_like` keeps the rows' sharding type (varying over the devices).
  no_columns = {'log_sum_exp': jnp.full_like(row, -jnp.inf), 'positive_sum': jnp.zeros_like(row),
                'positives': jnp.zeros_like(row), 'best': jnp.full_like(row, -jnp.inf),
                'hit': jnp.zeros_like(row, bool)}
  (stats, _, _), _ = lax.scan(visit_chunk, (no_columns, columns, ids), None,
                              length=gather.axis_size(axis_name))
  return stats


def clip_loss(image_emb, text_emb, image_ids, logit_scale, *, axis_name=None):
  """Symmetric InfoNCE over the global batch, never holding more than (n × n) logits.

  With s the logit scale and x_i, y_j the L2-normalised image and text
  embeddings of the global batch of N pairs,

    L = 1/(2N) Σ_i [ H(P_i, softmax_j(s x_i·y_j)) + H(P_i, softmax_j(s y_i·x_j)) ]

  where P_i is uniform over the columns j whose image id equals row i's, so two
  captions of one image (or two copies of one image) are not negatives of each
  other; with distinct ids this is exactly CLIP's diagonal cross-entropy. Each
  row's term is log Σ_j exp(l_ij) − (Σ_{j ∈ pos(i)} l_ij) / |pos(i)|.

  Sharded, each device holds n = N / devices rows. It scores its images against
  its own texts, then passes its texts and ids one place around the ring of
  devices (`lax.ppermute`) and scores those, until it has seen every device's,
  accumulating every row's log Σ exp online (as flash attention does) with the
  positives' sum and count; then the same for its texts against the images. So
  no device holds more than one (n × n) block of logits at a time, forward or
  backward (each block is rematerialised for the gradient rather than stored,
  and the two directions go round one after the other); the row sums are psum-ed. This equals the
  single-device loss on the global batch, gradient included. A row's top-1 is
  right when its highest column has the row's image id.

  Args:
    image_emb, text_emb: (n, D) this device's rows, n = N / devices.
    image_ids: (n,) image id of each pair.
    logit_scale: scalar s (already exponentiated and clamped).
    axis_name: mesh axis (or axes) of the batch, or None on one device.

  Returns:
    (loss, {'logit_scale', 'i2t_top1', 't2i_top1'}) with scalar, replicated values.
  """
  images = image_emb.astype(jnp.float32)
  texts = text_emb.astype(jnp.float32)
  stats = (_ring_row_stats(images, texts, image_ids, logit_scale, axis_name),
           _ring_row_stats(texts, images, image_ids, logit_scale, axis_name))
  local_sum = sum(jnp.sum(s['log_sum_exp'] - s['positive_sum'] / s['positives']) for s in stats)
  hits_i2t, hits_t2i = (jnp.sum(s['hit']) for s in stats)
  total, hits_i2t, hits_t2i = gather.psum((local_sum, hits_i2t, hits_t2i), axis_name)
  global_size = images.shape[0] * gather.axis_size(axis_name)
  loss = total / (2 * global_size)
  return loss, {'logit_scale': logit_scale, 'i2t_top1': hits_i2t / global_size,
                't2i_top1': hits_t2i / global_size}
