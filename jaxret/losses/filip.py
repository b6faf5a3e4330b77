"""FILIP's token-wise late interaction (Yao et al. 2022) and its contrastive loss."""

import math

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from jaxret import errors
from jaxret.losses import gather
from jaxret.losses import logits as logits_lib
from jaxret.losses import row_blocks


def _masked_max(values, mask, axis):
  """Max over `axis` of the entries where `mask` holds (padding never wins);
  0 where nothing is unmasked."""
  best = jnp.max(jnp.where(mask, values, -jnp.inf), axis=axis)
  return jnp.where(jnp.any(mask, axis=axis), best, 0.0)


def _masked_mean(values, mask, axis):
  """Mean over `axis` of the entries where `mask` holds (padding never enters); 0 if none."""
  total = jnp.sum(jnp.where(mask, values, 0.0), axis=axis)
  return total / jnp.maximum(jnp.sum(mask, axis=axis), 1)


def image_to_text_similarity(image_tokens, text_tokens, text_mask):
  """sim_I(i, j) = 1/P Σ_p max_{t real in j} x_ip·y_jt, shape (Ni, Nt).

  image_tokens: (Ni, P, D) unit patch vectors (no CLS); text_tokens: (Nt, L, D)
  unit token vectors; text_mask: (Nt, L), nonzero for real tokens.
  """
  sim = jnp.einsum('ipd,jtd->ijpt', image_tokens.astype(jnp.float32),
                   text_tokens.astype(jnp.float32))
  real = (text_mask > 0)[None, :, None, :]
  return jnp.mean(_masked_max(sim, real, axis=3), axis=2)


def text_to_image_similarity(text_tokens, text_mask, image_tokens):
  """sim_T(j, i) = 1/|real_j| Σ_{t real in j} max_p y_jt·x_ip, shape (Nt, Ni).

  Not the transpose of `image_to_text_similarity`: there every patch looks for
  its best word, here every real word looks for its best patch.
  """
  sim = jnp.einsum('jtd,ipd->jitp', text_tokens.astype(jnp.float32),
                   image_tokens.astype(jnp.float32))
  best_patch = jnp.max(sim, axis=3)  # (Nt, Ni, L)
  real = (text_mask > 0)[:, None, :]
  return _masked_mean(best_patch, real, axis=2)


def num_kept(count, fraction):
  """Tokens kept out of `count` when keeping the top `fraction` (at least one)."""
  return max(1, math.ceil(fraction * count - 1e-6))


def select_top_tokens(image_tokens, text_tokens, text_mask, fraction, group):
  """FILIP's memory saving: keep each example's top `fraction` of tokens.

  Within each group of `group` consecutive examples (the paper's "local
  worker"), a patch's score is its largest similarity with any real token of
  the group's texts, and a real text token's score its largest similarity with
  any patch of the group's images. Each image keeps its ceil(fraction · P)
  best patches; each text its ceil(fraction · real_j) best real tokens, in
  ceil(fraction · L) slots (the rest marked as padding). The choice is not
  differentiated; the kept tokens are. A fixed group (not "whatever one device
  holds") keeps the result independent of the number of devices.

  Returns:
    (image_tokens (n, kP, D), text_tokens (n, kL, D), text_mask (n, kL)).
  """
  n, patches, dim = image_tokens.shape
  length = text_tokens.shape[1]
  if n % group:
    raise errors.UserError(f'FILIP token selection groups {group} examples, which does not '
                           f'divide the {n} examples per device; set loss.selection_group to '
                           f'a divisor of {n}')
  real = text_mask > 0
  grouped_images = lax.stop_gradient(image_tokens.reshape(n // group, group, patches, dim))
  grouped_texts = lax.stop_gradient(text_tokens.reshape(n // group, group, length, dim))
  grouped_real = real.reshape(n // group, 1, 1, group, length)
  # sim[g, i, p, j, t]: patch p of image i against token t of text j, in group g.
  sim = jnp.einsum('gipd,gjtd->gipjt', grouped_images.astype(jnp.float32),
                   grouped_texts.astype(jnp.float32))
  patch_score = jnp.max(jnp.where(grouped_real, sim, -jnp.inf), axis=(3, 4)).reshape(n, patches)
  token_score = jnp.max(sim, axis=(1, 2)).reshape(n, length)  # Over the group's patches.
  token_score = jnp.where(real, token_score, -jnp.inf)

  _, patch_index = lax.top_k(patch_score, num_kept(patches, fraction))
  kept_images = jnp.take_along_axis(image_tokens, patch_index[..., None], axis=1)
  _, token_index = lax.top_k(token_score, num_kept(length, fraction))
  kept_texts = jnp.take_along_axis(text_tokens, token_index[..., None], axis=1)
  wanted = jnp.maximum(jnp.ceil(fraction * real.sum(axis=1) - 1e-6), 1)
  kept_mask = (jnp.take_along_axis(real, token_index, axis=1)
               & (jnp.arange(token_index.shape[1])[None, :] < wanted[:, None]))
  return kept_images, kept_texts, kept_mask.astype(text_mask.dtype)


def filip_loss(image_tokens, text_tokens, text_mask, image_ids, logit_scale, *,
               keep_fraction=1.0, selection_group=1, axis_name=None):
  """FILIP's contrastive loss on token-wise late-interaction similarities.

  With s the logit scale, sim_I and sim_T the image→text and text→image
  late-interaction similarities (`image_to_text_similarity`,
  `text_to_image_similarity`) over the global batch of N pairs,

    L = 1/(2N) Σ_i [ H(P_i, softmax_j(s sim_I(i, j))) + H(P_i, softmax_j(s sim_T(i, j))) ]

  with P_i uniform over the pairs with row i's image id (as in `clip_loss`).
  Padding text tokens never win a max and never enter a mean; the image side
  has patch tokens only (no CLS).

  Sharded: each device scores its images against the all-gathered text tokens
  and its texts against the all-gathered patch tokens (gathered with gradient),
  a block of rows at a time (`row_blocks`: a device holds about
  `row_blocks.ELEMENTS` token similarities, not (n, N, P, L)); the row sums are psum-ed,
  which equals the single-device loss. With keep_fraction < 1 each device first
  keeps its examples' top tokens (`select_top_tokens`), so less is gathered.

  Args:
    image_tokens: (n, P, D) unit patch vectors. text_tokens: (n, L, D) unit
      token vectors. text_mask: (n, L). image_ids: (n,). logit_scale: scalar.
    keep_fraction: fraction of tokens kept before gathering (1: all).
    selection_group: examples per selection group (must divide n).
    axis_name: mesh axis (or axes) of the batch, or None on one device.

  Returns:
    (loss, metrics) with scalar, replicated values.
  """
  if keep_fraction < 1:
    image_tokens, text_tokens, text_mask = select_top_tokens(
        image_tokens, text_tokens, text_mask, keep_fraction, selection_group)
  all_images = gather.all_gather(image_tokens, axis_name)
  all_texts = gather.all_gather(text_tokens, axis_name)
  all_masks = gather.all_gather(text_mask, axis_name)
  all_ids = gather.all_gather(image_ids, axis_name)

  def row_sums(rows, columns):
    images, texts, masks, ids = rows
    all_images, all_texts, all_masks, all_ids, logit_scale = columns
    targets = gather.same_id_targets(ids, all_ids)
    logits_i2t = logit_scale * image_to_text_similarity(images, all_texts, all_masks)
    logits_t2i = logit_scale * text_to_image_similarity(texts, masks, all_images)
    return (logits_lib.soft_cross_entropy_sum(logits_i2t, targets)
            + logits_lib.soft_cross_entropy_sum(logits_t2i, targets),
            logits_lib.top1_hits(logits_i2t, targets).sum(),
            logits_lib.top1_hits(logits_t2i, targets).sum())

  # A block of rows at a time: (rows × N × P × L) similarities of about
  # `row_blocks.ELEMENTS`, and no (n × N) array, whatever the batch.
  per_row = all_images.shape[0] * image_tokens.shape[1] * text_tokens.shape[1]
  local_sum, hits_i2t, hits_t2i = row_blocks.block_sums(
      row_sums, (image_tokens, text_tokens, text_mask, image_ids),
      (all_images, all_texts, all_masks, all_ids, logit_scale),
      most=row_blocks.rows_within(per_row))
  global_size = all_ids.shape[0]
  total, hits_i2t, hits_t2i = gather.psum((local_sum, hits_i2t, hits_t2i), axis_name)
  loss = total / (2 * global_size)
  metrics = {'i2t_top1': hits_i2t / global_size, 't2i_top1': hits_t2i / global_size}
  return loss, {'logit_scale': logit_scale, **metrics}


@jax.jit
def _chunk_scores(texts, mask, images):
  """Both directions from one token-similarity tensor (the two functions above
  would each compute it)."""
  sim = jnp.einsum('jtd,ipd->jitp', texts.astype(jnp.float32), images.astype(jnp.float32))
  real = (mask > 0)[:, None, :]
  t2i = _masked_mean(jnp.max(sim, axis=3), real, axis=2)
  i2t = jnp.mean(_masked_max(sim, real[..., None], axis=2), axis=2)
  return t2i, i2t.T


def late_interaction_scores(image_tokens, text_tokens, text_mask, chunk=32):
  """Both similarity matrices for a whole gallery, in chunks of texts (for
  evaluation): (text→image (Nt, Ni), image→text (Ni, Nt)) as NumPy arrays.
  Runs on the default device; inputs are host arrays."""
  t2i, i2t = [], []
  for start in range(0, len(text_tokens), chunk):
    texts, mask = text_tokens[start:start + chunk], text_mask[start:start + chunk]
    pad = chunk - len(texts)
    if pad:  # One compiled shape for every chunk.
      texts = np.concatenate([texts, np.zeros((pad,) + texts.shape[1:], texts.dtype)])
      mask = np.concatenate([mask, np.zeros((pad,) + mask.shape[1:], mask.dtype)])
    text_scores, image_scores = jax.device_get(_chunk_scores(texts, mask, image_tokens))
    t2i.append(text_scores[:chunk - pad])
    i2t.append(image_scores[:, :chunk - pad])
  return np.concatenate(t2i), np.concatenate(i2t, axis=1)
