"""SigLIP's pairwise sigmoid loss, computed chunk by chunk across devices."""

import jax
from jax import lax
import jax.numpy as jnp

from jaxret.losses import gather


def sigmoid_block_sum(image_emb, text_emb, image_ids, text_ids, temperature, bias):
  """−Σ_ij log σ(z_ij (t x_i·y_j + b)) over one (images × texts) block,
  z_ij = +1 where the image ids match and −1 elsewhere; computed as
  −Σ_ij log σ(−l_ij) − Σ_{ij: z_ij = +1} l_ij (log σ(l) = l + log σ(−l)), which
  needs no (n × n) array of signs."""
  logits = temperature * image_emb @ text_emb.T + bias
  positives = image_ids[:, None] == text_ids[None, :]
  return -jnp.sum(jax.nn.log_sigmoid(-logits)) - jnp.sum(logits * positives)


def siglip_loss(image_emb, text_emb, image_ids, temperature, bias, *, axis_name=None):
  """Pairwise sigmoid loss over the global batch (Zhai et al. 2023).

  With t the temperature, b the bias and x_i, y_j the L2-normalised image and
  text embeddings of the global batch of N pairs,

    L = −1/N Σ_i Σ_j log σ(z_ij (t x_i·y_j + b)),

  z_ij = +1 when pair i's and pair j's image ids are equal (the diagonal, and
  other captions of the same image) and −1 otherwise. Every pair is an
  independent binary problem, so there is no softmax over a row and the sum
  splits into blocks.

  Sharded, no device ever holds more than an (n × n) block of logits, n = N /
  devices: each device scores its images against its own texts, then passes its
  texts (with their ids) one place around the ring of devices (`lax.ppermute`)
  and scores the texts it received, until every image has met every text once.
  Each block is rematerialised in the backward pass rather than stored, and the
  gradient flows back around the ring (the transpose of a permute is the
  reverse permute); the block sums are psum-ed. This equals the
  single-device loss on the global batch, gradient included; big_vision's
  'chunked' sigmoid loss works the same way.

  Args:
    image_emb, text_emb: (n, D) this device's rows.
    image_ids: (n,) image id of each pair.
    temperature: scalar t (already exponentiated; initialised to 10).
    bias: scalar b (initialised to −10).
    axis_name: mesh axis (or axes) of the batch, or None on one device.

  Returns:
    (loss, metrics) with scalar, replicated values.
  """
  image_emb = image_emb.astype(jnp.float32)
  text_emb = text_emb.astype(jnp.float32)

  # Rematerialised in the backward pass: one (n × n) block at a time, not one per device.
  @jax.checkpoint
  def block(texts, ids):
    return sigmoid_block_sum(image_emb, texts, image_ids, ids, temperature, bias)

  def visit_chunk(carry, _):
    total, texts, ids = carry
    total = total + block(texts, ids)
    # The last pass brings every device its own texts back, unused (n × D numbers).
    return (total, *gather.rotate((texts, ids), axis_name)), None

  # Every block inside the loop, so that no two are computed side by side.
  no_texts = jnp.zeros_like(image_emb[0, 0])  # Keeps the rows' sharding type.
  num_chunks = gather.axis_size(axis_name)
  (total, _, _), _ = lax.scan(visit_chunk, (no_texts, text_emb, image_ids), None,
                              length=num_chunks)
  total = gather.psum(total, axis_name)
  loss = total / (image_emb.shape[0] * num_chunks)
  return loss, {'temperature': temperature, 'bias': bias}
