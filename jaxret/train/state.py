"""The training state: everything a step depends on, and so everything a checkpoint holds."""

from typing import Any

import flax.struct
import jax


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array  # Number of optimizer steps taken.
  params: Any
  opt_state: Any
  rng: jax.Array  # Raw uint32 key; folded with the step for per-step randomness.
  extra: Any  # The objective's own state: momentum encoders, queues, memories.
