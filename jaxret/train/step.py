"""The training step: one pure function for every method."""

import jax
import optax

from jaxret.train import state as state_lib


def compute_gradients(state: state_lib.TrainState, batch, objective):
  """The objective's loss, metrics, new extra state and parameter gradients.

  `objective(params, extra, batch, rng, step) -> (loss, metrics, extra)` is the
  method (`jaxret/objectives`); it handles the cross-device parts itself.
  """
  rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    loss, metrics, extra = objective(params, state.extra, batch, rng, state.step)
    return loss, (metrics, extra)

  (loss, (metrics, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return loss, metrics, extra, grads


def apply_gradients(state, grads, extra, objective, optimizer):
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  extra = objective.after_update(params, extra)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, extra=extra)


def train_step(state: state_lib.TrainState, batch, *, objective, optimizer):
  """One optimizer step on a global batch; returns the new state and metrics."""
  loss, metrics, extra, grads = compute_gradients(state, batch, objective)
  new_state = apply_gradients(state, grads, extra, objective, optimizer)
  metrics = {**metrics, 'loss': loss, 'grad_norm': optax.tree.norm(grads)}
  return new_state, metrics
