"""MoCo's InfoNCE against a queue, and WenLan's (BriVL's) two-way cross-modal form."""

import jax
import jax.numpy as jnp

from jaxret.losses import gather
from jaxret.losses import logits as logits_lib
from jaxret.losses import queue as queue_lib
from jaxret.losses import row_blocks


def moco_loss(queries, positive_keys, query_ids, key_queue, queue_ids, temperature, *,
              exclude_same_id=True, axis_name=None):
  """InfoNCE of each query against [its positive key; the queue] (MoCo):

    L = 1/N Σ_i −log( exp(q_i·k_i/T) / (exp(q_i·k_i/T) + Σ_{j∈Q_i} exp(q_i·Q_j/T)) )

  over the global batch of N queries, i.e. cross-entropy with label 0 over
  logits [q_i·k_i, q_i·Q_1, ..., q_i·Q_K] / T. Q_i holds the queue's keys,
  written or random initial ones (empty slots, id `queue.EMPTY_ID`, never
  count); with `exclude_same_id` it also leaves out queued keys of query i's
  own image, which are not negatives (the issue's rule for queue ids; MoCo
  itself has no ids and keeps them). Keys carry no gradient. Sharded: each
  device's rows, psum of the row sums (the positive is row-wise, the queue
  replicated), the logits taken a block of rows at a time (`row_blocks`).

  Args:
    queries: (n, D) unit query embeddings; positive_keys: (n, D) unit keys.
    query_ids: (n,) image ids; key_queue: (K, D); queue_ids: (K,).
    temperature: T (fixed).
  """
  key_queue = jax.lax.stop_gradient(key_queue).astype(jnp.float32)

  def row_sums(rows, columns):
    queries, positive_keys, query_ids = rows
    key_queue, queue_ids = columns
    queries = queries.astype(jnp.float32)
    positive_keys = jax.lax.stop_gradient(positive_keys).astype(jnp.float32)
    positive = jnp.sum(queries * positive_keys, axis=-1) / temperature
    keep = jnp.broadcast_to(queue_ids[None, :] != queue_lib.EMPTY_ID,
                            (queries.shape[0], queue_ids.shape[0]))
    if exclude_same_id:
      keep &= query_ids[:, None] != queue_ids[None, :]
    negatives = logits_lib.masked_logits(queries @ key_queue.T / temperature, keep)
    logits = jnp.concatenate([positive[:, None], negatives], axis=1)
    # The positive is column 0.
    return (-jnp.sum(jax.nn.log_softmax(logits, axis=-1)[:, 0]),
            jnp.sum(logits_lib.top1_matches(logits, 0)))

  # A block of rows at a time: (block × K) logits, whatever the batch.
  local_sum, hits = row_blocks.block_sums(row_sums, (queries, positive_keys, query_ids),
                                          (key_queue, queue_ids))
  total, hits = gather.psum((local_sum, hits), axis_name)
  global_size = queries.shape[0] * gather.axis_size(axis_name)
  return total / global_size, hits / global_size


def wenlan_loss(image_emb, text_emb, image_emb_m, text_emb_m, image_ids, image_queue,
                text_queue, queue_ids, *, temperature, exclude_same_id=True, axis_name=None):
  """WenLan/BriVL: two momentum key encoders and two queues,

    L = L_i2t + L_t2i,
    L_i2t = moco_loss(image queries v_i, text keys t'_i, text queue),
    L_t2i = moco_loss(text queries t_i, image keys v'_i, image queue),

  with v, t the online and v', t' the momentum encoders' unit embeddings.

  Returns:
    (loss, metrics) with scalar, replicated values.
  """
  kwargs = {'exclude_same_id': exclude_same_id, 'axis_name': axis_name}
  loss_i2t, top1_i2t = moco_loss(image_emb, text_emb_m, image_ids, text_queue, queue_ids,
                                 temperature, **kwargs)
  loss_t2i, top1_t2i = moco_loss(text_emb, image_emb_m, image_ids, image_queue, queue_ids,
                                 temperature, **kwargs)
  metrics = {'i2t_loss': loss_i2t, 't2i_loss': loss_t2i, 'i2t_top1': top1_i2t,
             't2i_top1': top1_t2i,
             'queue_fill': queue_lib.fill(queue_ids)}
  return loss_i2t + loss_t2i, metrics
