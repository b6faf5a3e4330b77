"""Gradient caching and accumulation over `config.microbatches` chunks of the batch.

With M chunks, each device's n rows of the global batch are split into M
chunks of n / M rows; chunk c of the global batch holds chunk c of every
device (so it stays sharded like the batch, with no communication).

Objectives with in-batch negatives (`Objective.CHUNKING == 'embeddings'`) use
gradient caching (Gao et al. 2021, GradCache), exact to the full-batch gradient:
  1. embed every chunk, keeping no activations (`objective.embed`);
  2. the loss on the embeddings of the whole global batch, and its gradient in
     the embeddings and in the parameters the loss reads directly (a logit
     scale) (`objective.loss_from_embeddings`; queues and memories are updated
     here, once per step);
  3. each chunk's forward pass again, pulling its embeddings' gradient back to
     the parameters (a VJP); the parameter gradients are summed.
Objectives whose loss is a mean over examples (`'per_example'`) accumulate the
gradient chunk by chunk: loss, metrics and gradient are the means over chunks.
"""

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxret import errors
from jaxret.parallel import mesh as mesh_lib


def check(microbatches, global_batch, mesh, objective, loss_name):
  """Refuses an M that does not divide the per-device batch, or an objective that cannot chunk."""
  if microbatches == 1:
    return
  per_device = global_batch // mesh_lib.batch_shards(mesh)
  if microbatches < 1 or per_device % microbatches:
    divisors = [m for m in range(1, per_device + 1) if per_device % m == 0]
    below = [m for m in divisors if m < microbatches][-1:]
    above = [m for m in divisors if m > microbatches][:1]
    nearest = ' or '.join(str(m) for m in below + above)
    raise errors.UserError(
        f'microbatches={microbatches} does not divide the per-device batch of {per_device} '
        f'(batch_size={global_batch} over {mesh_lib.batch_shards(mesh)} devices); '
        f'nearest valid: {nearest}')
  if objective.CHUNKING is None:
    raise errors.UserError(
        f'loss {loss_name!r} cannot be split into microbatches '
        f'({objective.CHUNKING_REFUSAL}); use microbatches=1')


def split(tree, microbatches, mesh):
  """(B, ...) leaves -> (M, B / M, ...): chunk c holds rows c·k..(c+1)·k − 1 of every device."""
  shards = mesh_lib.batch_shards(mesh)
  chunked = NamedSharding(mesh, P(None, mesh_lib.batch_axes(mesh)))

  def one(x):
    per_device = x.shape[0] // shards
    x = x.reshape(shards, microbatches, per_device // microbatches, *x.shape[1:])
    x = jnp.swapaxes(x, 0, 1).reshape(microbatches, shards * x.shape[2], *x.shape[3:])
    return lax.with_sharding_constraint(x, chunked)

  return jax.tree.map(one, tree)


def merge(tree, mesh):
  """The inverse of `split`: (M, B / M, ...) leaves -> (B, ...) in the batch's row order."""
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
  chunks = split(batch, microbatches, mesh)
  embeddings = merge(lax.map(lambda chunk: objective.embed(params, chunk), chunks), mesh)

  def loss_fn(params, embeddings):
    loss, metrics, new_extra = objective.loss_from_embeddings(params, extra, embeddings, batch,
                                                              rng, step)
    return loss, (metrics, new_extra)

  (loss, (metrics, new_extra)), (grads, embedding_grads) = jax.value_and_grad(
      loss_fn, argnums=(0, 1), has_aux=True)(params, embeddings)

  def add_chunk(total, chunk_and_cotangent):
    chunk, cotangent = chunk_and_cotangent
    _, pull_back = jax.vjp(lambda p: objective.embed(p, chunk), params)
    return jax.tree.map(jnp.add, total, pull_back(cotangent)[0]), None

  grads, _ = lax.scan(add_chunk, grads, (chunks, split(embedding_grads, microbatches, mesh)))
  return loss, metrics, new_extra, grads


def accumulated_gradients(params, extra, batch, rng, step, objective, microbatches):
  """Per-example losses: the means over chunks of each chunk's loss, metrics and gradient.

  Every chunk gets the step's `rng` (such objectives draw no randomness); the
  extra state is threaded from chunk to chunk."""

  def loss_fn(params, extra, chunk):
    loss, metrics, new_extra = objective(params, extra, chunk, rng, step)
    return loss, (metrics, new_extra)

  def add_chunk(carry, chunk):
    total, extra = carry
    (loss, (metrics, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, extra, chunk)
    total = jax.tree.map(lambda t, v: t + v / microbatches, total, (loss, metrics, grads))
    return (total, extra), None

  chunks = split(batch, microbatches, objective.mesh)
  first = jax.tree.map(lambda x: x[0], chunks)
  (loss, (metrics, _)), grads = jax.eval_shape(
      jax.value_and_grad(loss_fn, has_aux=True), params, extra, first)
  zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (loss, metrics, grads))
  ((loss, metrics, grads), extra), _ = lax.scan(add_chunk, (zero, extra), chunks)
  return loss, metrics, extra, grads
