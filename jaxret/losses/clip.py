"""CLIP's symmetric InfoNCE loss with positives defined by image id."""

import jax.numpy as jnp

from jaxret.losses import gather
from jaxret.losses import logits as logits_lib


def symmetric_infonce(logits_i2t, logits_t2i, targets, *, axis_name=None):
  """`clip_loss` (and FILIP's) from the logits of both directions, and their top-1.

    L = 1/(2N) Σ_i [ H(P_i, softmax logits_i2t(i, ·)) + H(P_i, softmax logits_t2i(i, ·)) ]

  over the global batch of N pairs, from this device's rows of logits against
  all N columns and the soft targets P (n, N); the row sums are psum-ed. A
  row's top-1 is right when its highest column has the row's image id.

  Returns:
    (loss, {'i2t_top1', 't2i_top1'}) with scalar, replicated values.
  """
  local_sum = (logits_lib.soft_cross_entropy_sum(logits_i2t, targets)
               + logits_lib.soft_cross_entropy_sum(logits_t2i, targets))
  hits_i2t = logits_lib.top1_hits(logits_i2t, targets).sum()
  hits_t2i = logits_lib.top1_hits(logits_t2i, targets).sum()
  global_size = targets.shape[1]
  total, hits_i2t, hits_t2i = gather.psum((local_sum, hits_i2t, hits_t2i), axis_name)
  loss = total / (2 * global_size)
  return loss, {'i2t_top1': hits_i2t / global_size, 't2i_top1': hits_t2i / global_size}


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
  loss, metrics = symmetric_infonce(logits_i2t, logits_t2i, targets, axis_name=axis_name)
  return loss, {'logit_scale': logit_scale, **metrics}
