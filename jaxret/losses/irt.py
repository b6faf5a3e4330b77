"""IRT's objective (El-Nouby et al. 2021): margin contrastive loss with a
cross-batch memory, plus the differential-entropy (KoLeo) regulariser.

Two forms share the pieces below: `irt_image_loss` (image retrieval: anchors
and references are images, positives share a class label) and
`irt_cross_modal_loss` (text-to-image retrieval: image anchors against text
references and text anchors against image references, positives share an
image id).
"""

import jax.numpy as jnp

from jaxret.losses import gather
from jaxret.losses import row_blocks

MARGIN = 0.5
KOLEO_EPS = 1e-8


def margin_contrastive_sum(anchors, anchor_labels, references, reference_labels, margin,
                           excluded_column=None):
  """Σ_ij [y_i = y_j] (1 − s_ij) + [y_i ≠ y_j] [s_ij > β] s_ij, s_ij = a_i·r_j.

  The negative term is the reference code's (pytorch-metric-learning's
  ContrastiveLoss with neg_margin β as used by IRT): s_ij itself over the
  negatives above the margin. The paper writes it as the hinge (s_ij − β)+,
  which differs by β per active negative and has the same gradient.
  References with a negative label are empty memory slots and never count;
  `excluded_column` (n,) int leaves out one reference of each anchor (its own
  column or memory slot; −1: none). Taken a block of anchors at a time
  (`row_blocks`: (block × R) similarities, whatever the batch).

  Returns:
    (sum, number of positive pairs, number of active negative pairs).
  """
  if excluded_column is None:
    excluded_column = jnp.full(anchor_labels.shape, -1, jnp.int32)

  def row_sums(rows, columns):
    anchors, anchor_labels, excluded_column = rows
    references, reference_labels = columns
    similarity = anchors.astype(jnp.float32) @ references.astype(jnp.float32).T
    counted = ((reference_labels[None, :] >= 0)
               & (excluded_column[:, None] != jnp.arange(references.shape[0])[None, :]))
    same = anchor_labels[:, None] == reference_labels[None, :]
    positive = same & counted
    negative = ~same & counted & (similarity > margin)
    total = (jnp.sum(jnp.where(positive, 1.0 - similarity, 0.0))
             + jnp.sum(jnp.where(negative, similarity, 0.0)))
    return total, positive.sum(), negative.sum()

  return row_blocks.block_sums(row_sums, (anchors, anchor_labels, excluded_column),
                               (references, reference_labels))


def _safe_norm(x):
  """‖x‖ along the last axis with a zero (not NaN) gradient at x = 0."""
  squared = jnp.sum(x * x, axis=-1)
  nonzero = squared > 0
  return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, squared, 1.0)), 0.0)


def koleo_sum(emb, identity, *, axis_name=None, eps=KOLEO_EPS):
  """Σ_i −log(‖x_i − x_nn(i)‖ + ε) over this device's rows, and their count.

  x_nn(i) is the row of the global batch with the largest dot product with
  x_i among those whose `identity` differs from x_i's (the row itself, and
  copies of the same image, are not neighbours). Rows with no neighbour are
  left out. Inputs are L2-normalised; computed in float32.
  """
  emb = emb.astype(jnp.float32)
  all_emb = gather.all_gather(emb, axis_name)
  all_identity = gather.all_gather(identity, axis_name)

  def row_sums(rows, columns):  # A block of rows at a time (`row_blocks`).
    emb, identity = rows
    all_emb, all_identity = columns
    candidate = identity[:, None] != all_identity[None, :]
    dots = jnp.where(candidate, emb @ all_emb.T, -jnp.inf)
    neighbour = all_emb[jnp.argmax(dots, axis=1)]
    has_neighbour = candidate.any(axis=1)
    log_distance = jnp.log(_safe_norm(emb - neighbour) + eps)
    return -jnp.sum(jnp.where(has_neighbour, log_distance, 0.0)), has_neighbour.sum()

  return row_blocks.block_sums(row_sums, (emb, identity), (all_emb, all_identity))


def koleo(emb, identity, *, axis_name=None, eps=KOLEO_EPS):
  """The differential-entropy regulariser −mean_i log(‖x_i − x_nn(i)‖ + ε)
  over the global batch (see `koleo_sum`); replicated."""
  total, count = gather.psum(koleo_sum(emb, identity, axis_name=axis_name, eps=eps), axis_name)
  return total / jnp.maximum(count, 1)


def irt_image_loss(emb, labels, identity, memory_slots, memory_emb, memory_labels, *,
                   margin=MARGIN, koleo_weight=0.0, axis_name=None):
  """IRT's loss for image retrieval, on the global batch of N images.

  With x_i the L2-normalised descriptors and y_i their class labels,

    L = [C(batch, batch) + C(batch, memory)] / N + λ · KoLeo(batch),

  C(A, R) = Σ_{a ∈ A} Σ_{r ∈ R, r ≠ a} `margin_contrastive_sum` terms. The
  memory was filled before the loss, so it holds this batch too (as constants):
  each anchor's own slot is excluded, as is its own column of the batch.

  Sharded: each device's anchors against the all-gathered batch (with
  gradient) and against the replicated memory; the sums are psum-ed.

  Args:
    emb: (n, D) this device's descriptors.
    labels: (n,) class labels (>= 0).
    identity: (n,) image ids: rows with the same id are copies of one image and
      are not each other's nearest neighbour in the regulariser.
    memory_slots: (n,) the memory slot of each row, or −1 if it is not there.
    memory_emb, memory_labels: (K, D) and (K,) the memory (label −1: empty).
    margin: β. koleo_weight: λ.
    axis_name: mesh axis (or axes) of the batch, or None on one device.

  Returns:
    (loss, metrics) with scalar, replicated values.
  """
  all_emb = gather.all_gather(emb, axis_name)
  all_labels = gather.all_gather(labels, axis_name)
  rows = gather.local_offset(emb.shape[0], axis_name) + jnp.arange(emb.shape[0])
  batch_sum, batch_pos, batch_neg = margin_contrastive_sum(
      emb, labels, all_emb, all_labels, margin,
      excluded_column=rows)
  memory_sum, memory_pos, memory_neg = margin_contrastive_sum(
      emb, labels, memory_emb, memory_labels, margin,
      excluded_column=memory_slots)
  sums = gather.psum((batch_sum + memory_sum, batch_pos + memory_pos, batch_neg + memory_neg),
                     axis_name)
  contrastive = sums[0] / all_emb.shape[0]
  regulariser = koleo(emb, identity, axis_name=axis_name)
  loss = contrastive + koleo_weight * regulariser
  return loss, {'contrastive': contrastive, 'koleo': regulariser,
                'positive_pairs': sums[1].astype(jnp.float32),
                'active_negative_pairs': sums[2].astype(jnp.float32)}


def irt_cross_modal_loss(image_emb, text_emb, image_ids, memory_image, memory_text,
                         memory_labels, *, margin=MARGIN, koleo_weight=0.0, axis_name=None):
  """IRT's loss carried over to text-to-image retrieval, on N (image, caption) pairs.

  Positives are pairs with the same image id (so a caption is a positive of
  its image and of the image's other copies); there are no same-modality
  pairs. With C(A → R) the `margin_contrastive_sum` of anchors A against
  references R,

    L = ½ [C(images → texts) + C(images → text memory)
           + C(texts → images) + C(texts → image memory)] / N
        + λ · ½ [KoLeo(images) + KoLeo(texts)].

  The memory holds (image, text, image id) triples of past global batches,
  this one included (filled before the loss, as in IRT). Nothing is excluded:
  an image and its caption in the memory are a positive pair, not a self-pair.
  The regulariser's neighbours exclude rows with the same image id.

  Args:
    image_emb, text_emb: (n, D) this device's rows.
    image_ids: (n,) image id of each pair (>= 0).
    memory_image, memory_text, memory_labels: (K, D), (K, D), (K,) (label −1: empty).
    margin: β. koleo_weight: λ.
    axis_name: mesh axis (or axes) of the batch, or None on one device.

  Returns:
    (loss, metrics) with scalar, replicated values.
  """
  all_images = gather.all_gather(image_emb, axis_name)
  all_texts = gather.all_gather(text_emb, axis_name)
  all_ids = gather.all_gather(image_ids, axis_name)
  parts = [margin_contrastive_sum(image_emb, image_ids, all_texts, all_ids, margin),
           margin_contrastive_sum(image_emb, image_ids, memory_text, memory_labels, margin),
           margin_contrastive_sum(text_emb, image_ids, all_images, all_ids, margin),
           margin_contrastive_sum(text_emb, image_ids, memory_image, memory_labels, margin)]
  sums = gather.psum(tuple(sum(p[k] for p in parts) for k in range(3)), axis_name)
  contrastive = sums[0] / (2 * all_ids.shape[0])
  regulariser = 0.5 * (koleo(image_emb, image_ids, axis_name=axis_name)
                       + koleo(text_emb, image_ids, axis_name=axis_name))
  loss = contrastive + koleo_weight * regulariser
  return loss, {'contrastive': contrastive, 'koleo': regulariser,
                'positive_pairs': sums[1].astype(jnp.float32),
                'active_negative_pairs': sums[2].astype(jnp.float32)}
