"""The training step: one pure function for every method."""

import jax
import jax.numpy as jnp
import optax

from jaxret.train import guards
from jaxret.train import microbatch
from jaxret.train import state as state_lib


def compute_gradients(state: state_lib.TrainState, batch, objective, microbatches=1):
  """The objective's loss, metrics, new extra state and parameter gradients.

  `objective(params, extra, batch, rng, step) -> (loss, metrics, extra)` is the
  method (`jaxret/objectives`); it handles the cross-device parts itself. With
  `microbatches` > 1, the batch goes through in that many chunks
  (`train/microbatch.py`: gradient caching, or accumulation of per-example losses).
  """
  rng = jax.random.fold_in(state.rng, state.step)
  if microbatches > 1:
    chunked = {'embeddings': microbatch.cached_gradients,
               'per_example': microbatch.accumulated_gradients}[objective.CHUNKING]
    return chunked(state.params, state.extra, batch, rng, state.step, objective, microbatches)

  def loss_fn(params):
    loss, metrics, extra = objective(params, state.extra, batch, rng, state.step)
    return loss, (metrics, extra)

  (loss, (metrics, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return loss, metrics, extra, grads


def apply_gradients(state, grads, extra, objective, optimizer):
  """The optimizer update, the objective's parameter bounds, then its after-update hook."""
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = objective.clamp_params(optax.apply_updates(state.params, updates))
  extra = objective.after_update(params, extra)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, extra=extra)


def train_step(state: state_lib.TrainState, batch, *, objective, optimizer,
               skip_nonfinite=False, microbatches=1):
  """One optimizer step on a global batch; returns the new state and metrics.

  Metrics include `finite` and `finite_grads` (per parameter) for the numeric
  guard; with `skip_nonfinite`, a step whose loss or gradients are not finite
  leaves parameters, optimizer state and extra state unchanged (the step count
  still advances, so the data and the schedule move on). `microbatches`: see
  `compute_gradients`.
  """
  loss, metrics, extra, grads = compute_gradients(state, batch, objective, microbatches)
  new_state = apply_gradients(state, grads, extra, objective, optimizer)
  finite, finite_grads = guards.finite_flags(loss, grads)
  if skip_nonfinite:
    unchanged = state.replace(step=new_state.step)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, unchanged)
  metrics = {**metrics, 'loss': loss, 'grad_norm': optax.tree.norm(grads),
             'finite': finite, 'finite_grads': finite_grads}
  return new_state, metrics
