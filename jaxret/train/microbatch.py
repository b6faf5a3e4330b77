"""Gradient caching and accumulation over `config.microbatches` chunks of the batch.

With M chunks, each device's n rows of the global batch are split into M
chunks of n / M rows; chunk c of the global batch holds chunk c of every
device (so it stays sharded like the batch, with no communication).

Objectives with in-batch negatives (`Objective.CHUNKING == 'embeddings'`) use
gradient caching (Gao et al. 2021, GradCache), exact to the full-batch gradient:
  1. embed every chunk, keeping no activations (`objective.embed`, and
     `objective.embed_keys` for keys from the extra state, e.g. a momentum
     encoder's);
  2. the loss on the embeddings of the whole global batch, and its gradient in
     the embeddings and in the parameters the loss reads directly (a logit
     scale) (`objective.loss_from_embeddings`; queues and memories are updated
     here, once per step);
  3. each chunk's forward pass again, pulling its embeddings' gradient back to
     the parameters (a VJP); the parameter gradients are summed. Per-example
     terms that need more than embeddings (ALBEF's ITM and MLM) are added in
     this pass, chunk by chunk (`objective.chunk_pass`), with their
     randomness drawn once for the global batch (`objective.draw`).
Objectives whose loss is a mean over examples (`'per_example'`) accumulate the
gradient chunk by chunk: loss, metrics and gradient are the means over chunks.
"""

import jax
from jax import lax
import jax.numpy as jnp

from jaxret import errors
from jaxret.parallel import mesh as mesh_lib


def check(microbatches, global_batch, mesh, objective, loss_name):
  """Refuses an M that does not divide the per-device batch, or an objective that cannot chunk."""
  if microbatches == 1:
    return
  shards = mesh_lib.batch_shards(mesh)
  per_device = global_batch // shards
  if microbatches < 1 or per_device % microbatches:
    divisors = [m for m in range(1, per_device + 1) if per_device % m == 0]
    below = [m for m in divisors if m < microbatches][-1:]
    above = [m for m in divisors if m > microbatches][:1]
    nearest = ' or '.join(str(m) for m in below + above)
    raise errors.UserError(
        f'microbatches={microbatches} does not divide the per-device batch of {per_device} '
        f'(batch_size={global_batch} over {shards} device{"s" if shards > 1 else ""}); '
        f'nearest valid: {nearest}')
  if objective.CHUNKING is None:
    raise errors.UserError(
        f'loss {loss_name!r} cannot be split into microbatches '
        f'({objective.CHUNKING_REFUSAL}); use microbatches=1')


def chunk(tree, index, microbatches, mesh):
  """Chunk `index` of (B, ...) leaves: rows index·k..(index+1)·k − 1 of every device,
  (B / M, ...) sharded like the batch. Each device slices its own rows in place
  (no rearranged copy of the batch, which would grow with it)."""
  shards = mesh_lib.batch_shards(mesh)
  rows = mesh_lib.batch_sharding(mesh)

  def one(x):
    per_device = x.shape[0] // shards
    x = x.reshape(shards, microbatches, per_device // microbatches, *x.shape[1:])
    x = lax.dynamic_index_in_dim(x, index, axis=1, keepdims=False)
    return lax.with_sharding_constraint(x.reshape(-1, *x.shape[2:]), rows)

  return jax.tree.map(one, tree)


def merge(tree, mesh):
  """(M, B / M, ...) leaves, `chunk` i at i, -> (B, ...) in the batch's row order."""
  shards = mesh_lib.batch_shards(mesh)
  rows = mesh_lib.batch_sharding(mesh)

  def one(x):
    microbatches, chunk = x.shape[:2]
    x = x.reshape(microbatches, shards, chunk // shards, *x.shape[2:])
    x = jnp.swapaxes(x, 0, 1).reshape(microbatches * chunk, *x.shape[3:])
    return lax.with_sharding_constraint(x, rows)

  return jax.tree.map(one, tree)


def cached_gradients(params, extra, batch, rng, step, objective, microbatches):
  """Gradient caching: (loss, metrics, new extra, gradients) equal to the full batch's."""
  mesh = objective.mesh
  indices = jnp.arange(microbatches)

  def embed_chunk(index):
    rows = chunk(batch, index, microbatches, mesh)
    return objective.embed(params, rows), objective.embed_keys(extra, rows)

  embeddings, keys = merge(lax.map(embed_chunk, indices), mesh)

  def loss_fn(params, embeddings):
    loss, metrics, new_extra = objective.loss_from_embeddings(
        params, extra, {**embeddings, **keys}, batch, rng, step)
    return loss, (metrics, new_extra)

  (loss, (metrics, new_extra)), (grads, embedding_grads) = jax.value_and_grad(
      loss_fn, argnums=(0, 1), has_aux=True)(params, embeddings)
  draws = objective.draw(params, extra, {**embeddings, **keys}, batch, rng, step)

  def chunk_fn(params, index):
    """The chunk's embeddings paired with their cached gradient (so that this
    function's gradient is their VJP), plus the chunk's own per-example terms."""
    select = lambda tree: chunk(tree, index, microbatches, mesh)
    rows_embeddings, terms, term_metrics = objective.chunk_pass(params, extra, batch, draws,
                                                                select, step)
    cotangent = select(embedding_grads)
    paired = sum(jnp.vdot(jax.lax.stop_gradient(c).astype(jnp.float32), e.astype(jnp.float32))
                 for c, e in zip(jax.tree.leaves(cotangent), jax.tree.leaves(rows_embeddings)))
    return paired + terms, (terms, term_metrics)

  def add_chunk(total, index):
    grads, (terms, term_metrics) = jax.grad(chunk_fn, has_aux=True)(params, index)
    return jax.tree.map(jnp.add, total, (grads, terms, term_metrics)), None

  _, (terms, term_metrics) = jax.eval_shape(chunk_fn, params, 0)
  zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (terms, term_metrics))
  (grads, terms, term_metrics), _ = lax.scan(add_chunk, (grads, *zero), indices)
  return loss + terms, {**metrics, **term_metrics}, new_extra, grads


def accumulated_gradients(params, extra, batch, rng, step, objective, microbatches):
  """Per-example losses: the means over chunks of each chunk's loss, metrics and gradient.

  Every chunk gets the step's `rng` (such objectives draw no randomness); the
  extra state is threaded from chunk to chunk."""

  def loss_fn(params, extra, chunk):
    loss, metrics, new_extra = objective(params, extra, chunk, rng, step)
    return loss, (metrics, new_extra)

  def add_chunk(carry, index):
    total, extra = carry
    rows = chunk(batch, index, microbatches, objective.mesh)
    (loss, (metrics, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, extra, rows)
    total = jax.tree.map(lambda t, v: t + v / microbatches, total, (loss, metrics, grads))
    return (total, extra), None

  first = chunk(batch, 0, microbatches, objective.mesh)
  (loss, (metrics, _)), grads = jax.eval_shape(
      jax.value_and_grad(loss_fn, has_aux=True), params, extra, first)
  zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (loss, metrics, grads))
  ((loss, metrics, grads), extra), _ = lax.scan(add_chunk, (zero, extra),
                                                jnp.arange(microbatches))
  return loss, metrics, extra, grads
