"""ALBEF's image–text contrastive loss against a queue, with momentum distillation."""

import jax
import jax.numpy as jnp

from jaxret.losses import gather
from jaxret.losses import logits as logits_lib
from jaxret.losses import queue as queue_lib
from jaxret.losses import row_blocks


def itc_loss(image_emb, text_emb, image_emb_m, text_emb_m, image_ids, image_queue, text_queue,
             queue_ids, temperature, alpha, *, axis_name=None):
  """ITC with momentum distillation (ALBEF, Li et al. 2021, eq. 1-2 and §3.3).

  The keys are the momentum encoders' embeddings of the global batch of N
  pairs followed by the queue, K_t = [t'_1..t'_N; Q_t] and K_v = [v'_1..v'_N;
  Q_v], with image ids id(K). With τ the temperature, v_i, t_i the online and
  v'_i, t'_i the momentum embeddings of pair i,

    s_i2t(i, j) = v_i·K_t(j) / τ,      s'_i2t(i, j) = v'_i·K_t(j) / τ,
    y_i2t(i)    = α softmax_j(s'_i2t(i, ·)) + (1 − α) P_i,
    L_itc = 1/(2N) Σ_i [ H(y_i2t(i), softmax s_i2t(i, ·)) + H(y_t2i(i), softmax s_t2i(i, ·)) ]

  and likewise t2i with t_i, t'_i against K_v. P_i is uniform over the keys
  whose image id equals pair i's (its own momentum key, other captions of its
  image in the batch and queued copies: ALBEF's retrieval fine-tuning), so
  α = 0 gives plain InfoNCE over batch + queue. Empty queue slots (id
  `queue.EMPTY_ID`) are left out of every softmax. Targets carry no gradient.

  Sharded: each device scores its own rows against the all-gathered momentum
  keys (no gradient needed: they are constants) and the replicated queue, and
  the row sums are psum-ed, which equals the single-device loss. The logits
  are taken a block of rows at a time (`row_blocks`).

  Args:
    image_emb, text_emb: (n, D) online unit embeddings of this device's pairs.
    image_emb_m, text_emb_m: (n, D) momentum unit embeddings of the same pairs.
    image_ids: (n,) image ids.
    image_queue, text_queue: (K, D) queued momentum embeddings (replicated).
    queue_ids: (K,) their image ids, `queue.EMPTY_ID` in unwritten slots.
    temperature: scalar τ (already clamped).
    alpha: scalar distillation weight α in [0, 1].
    axis_name: mesh axis of the batch, or None on one device.

  Returns:
    (loss, metrics) with scalar, replicated values.
  """
  all_image_m = gather.all_gather_no_grad(image_emb_m, axis_name)
  all_text_m = gather.all_gather_no_grad(text_emb_m, axis_name)
  all_ids = gather.all_gather(image_ids, axis_name)
  key_ids = jnp.concatenate([all_ids, queue_ids.astype(all_ids.dtype)])
  valid = key_ids != queue_lib.EMPTY_ID

  def row_sums(rows, columns):
    queries, queries_m, row_ids = rows
    keys, temperature, alpha = columns
    same_id = gather.same_id_targets(row_ids, key_ids)
    logits = logits_lib.masked_logits(queries.astype(jnp.float32) @ keys.T / temperature, valid)
    logits_m = logits_lib.masked_logits(
        queries_m.astype(jnp.float32) @ keys.T / temperature, valid)
    targets = jax.lax.stop_gradient(
        alpha * jax.nn.softmax(logits_m, axis=-1) + (1 - alpha) * same_id)
    return (logits_lib.soft_cross_entropy_sum(logits, targets),
            logits_lib.top1_hits(logits, same_id).sum())

  def direction(queries, queries_m, keys):
    # A block of rows at a time: (block × (N + K)) logits, whatever the batch.
    return row_blocks.block_sums(row_sums, (queries, queries_m, image_ids),
                                 (keys.astype(jnp.float32), temperature, alpha))

  sum_i2t, hits_i2t = direction(
      image_emb, image_emb_m,
      jnp.concatenate([all_text_m, text_queue.astype(all_text_m.dtype)]))
  sum_t2i, hits_t2i = direction(
      text_emb, text_emb_m,
      jnp.concatenate([all_image_m, image_queue.astype(all_image_m.dtype)]))
  global_size = all_ids.shape[0]
  sum_i2t, sum_t2i, hits_i2t, hits_t2i = gather.psum(
      (sum_i2t, sum_t2i, hits_i2t, hits_t2i), axis_name)
  loss = (sum_i2t + sum_t2i) / (2 * global_size)
  metrics = {'itc_loss': loss, 'temperature': temperature, 'alpha': alpha,
             'queue_fill': queue_lib.fill(queue_ids),
             'i2t_top1': hits_i2t / global_size, 't2i_top1': hits_t2i / global_size}
  return loss, metrics
