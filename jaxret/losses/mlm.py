"""Masked language modelling: BERT's masking and a loss with momentum distillation."""

import jax
import jax.numpy as jnp

from jaxret.losses import gather
from jaxret.losses import logits as logits_lib


def mask_tokens(rng, tokens, text_mask, *, mask_id, vocab_size, probability=0.15):
  """BERT's 80/10/10 masking (as ALBEF applies it).

  Each real token except the first ([CLS]: the tokenizer puts it at position
  0) is selected with probability `probability`; padding (text_mask == 0) is
  never selected. A selected token becomes `mask_id` with probability 0.8, a
  uniformly random id in [0, vocab_size) with probability 0.1, and stays
  itself with probability 0.1. Draw it on the GLOBAL batch with the step's
  rng, so it does not depend on the device count.

  Returns:
    (inputs (B, L) int32, selected (B, L) bool): the corrupted tokens and the
    positions whose original token is to be predicted.
  """
  select_rng, kind_rng, random_rng = jax.random.split(rng, 3)
  positions = jnp.arange(tokens.shape[1])[None, :]
  eligible = (text_mask > 0) & (positions > 0)
  selected = jax.random.bernoulli(select_rng, probability, tokens.shape) & eligible
  kind = jax.random.uniform(kind_rng, tokens.shape)
  random_ids = jax.random.randint(random_rng, tokens.shape, 0, vocab_size, dtype=tokens.dtype)
  inputs = jnp.where(selected & (kind < 0.8), jnp.asarray(mask_id, tokens.dtype), tokens)
  inputs = jnp.where(selected & (kind >= 0.8) & (kind < 0.9), random_ids, inputs)
  return inputs, selected


def mlm_loss(logits, momentum_logits, labels, selected, alpha, *, axis_name=None):
  """MLM with momentum distillation (ALBEF §3.3), over the selected positions
  of the global batch:

    L_mlm = 1/|S| Σ_(b,l)∈S [ (1 − α) · −log p(labels_bl) + α · H(softmax(m_bl), p_bl) ],

  p = softmax(logits), m the momentum model's logits for the same corrupted
  input (no gradient). Sharded: psum of sums and of |S|.

  Args:
    logits, momentum_logits: (n, L, V); labels: (n, L) original token ids;
    selected: (n, L) bool; alpha: scalar.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), -1)[..., 0]
  teacher = jax.nn.softmax(jax.lax.stop_gradient(momentum_logits).astype(jnp.float32), axis=-1)
  distill = -jnp.sum(teacher * log_probs, axis=-1)
  per_token = (1 - alpha) * nll + alpha * distill
  correct = logits_lib.top1_matches(logits, labels) & selected
  total, count, correct = gather.psum(
      (jnp.sum(jnp.where(selected, per_token, 0.0)), jnp.sum(selected), jnp.sum(correct)),
      axis_name)
  count = jnp.maximum(count, 1)
  loss = total / count
  return loss, {'mlm_loss': loss, 'mlm_accuracy': correct / count}
