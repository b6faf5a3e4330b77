"""CLIP's symmetric InfoNCE loss with positives defined by image id."""

import jax
import jax.numpy as jnp

from jaxret.losses import gather


def soft_cross_entropy_sum(logits, targets):
  """Σ_rows −Σ_cols targets · log_softmax(logits)."""
  return -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1))


def clip_loss(image_emb, text_emb, image_ids, logit_scale, *, axis_name=None):
  """Symmetric InfoNCE over the global batch.

  With s the logit scale and x_i, y_j the L2-normalised image and text
  embeddings of the global batch of N pairs,

    L = 1/(2N) Σ_i [ H(P_i, softmax_j(s x_i·y_j)) + H(P_i, softmax_j(s y_i·x_j)) ]

  where P_i is uniform over the columns j whose image id equals row i's, so two
  captions of one image (or two copies of one image) are not negatives of each
  other; with distinct ids this is exactly CLIP's diagonal cross-entropy.

  Sharded (open_clip's local_loss + gather_with_grad): each device scores its
  own rows against the all-gathered columns, and the row sums are psum-ed, which
  equals the single-device loss on the global batch, gradient included.

  Args:
    image_emb, text_emb: (n, D) this device's rows, n = N / devices.
    image_ids: (n,) image id of each pair.
    logit_scale: scalar s (already exponentiated and clamped).
    axis_name: mesh axis of the batch, or None on one device.

  Returns:
    (loss, metrics) with scalar, replicated values.
  """
  all_images = gather.all_gather(image_emb, axis_name)
  all_texts = gather.all_gather(text_emb, axis_name)
  all_ids = gather.all_gather(image_ids, axis_name)
  targets = gather.same_id_targets(image_ids, all_ids)
  logits_i2t = logit_scale * image_emb.astype(jnp.float32) @ all_texts.astype(jnp.float32).T
  logits_t2i = logit_scale * text_emb.astype(jnp.float32) @ all_images.astype(jnp.float32).T
  local_sum = (soft_cross_entropy_sum(logits_i2t, targets)
               + soft_cross_entropy_sum(logits_t2i, targets))
  # Top-1 of a row is right when it lands on any column with the row's id.
  hits_i2t = jnp.take_along_axis(targets, jnp.argmax(logits_i2t, 1)[:, None], 1) > 0
  hits_t2i = jnp.take_along_axis(targets, jnp.argmax(logits_t2i, 1)[:, None], 1) > 0
  global_size = all_ids.shape[0]
  total, hits_i2t, hits_t2i = gather.psum(
      (local_sum, hits_i2t.sum(), hits_t2i.sum()), axis_name)
  loss = total / (2 * global_size)
  metrics = {'logit_scale': logit_scale,
             'i2t_top1': hits_i2t / global_size, 't2i_top1': hits_t2i / global_size}
  return loss, metrics
