"""The optimizer from `config.optimizer`: optax AdamW/SGD with warmup + cosine schedule.

`optimizer.frozen` (regexes over '/'-joined parameter paths, e.g.
'text_encoder/.*') locks those parameters (LiT): their updates are zero, and
they count neither in gradient clipping nor in weight decay.
"""

import re

import jax
import optax

from jaxret import errors
from jaxret import tree


def schedule(config):
  opt = config.optimizer
  warmup = min(opt.warmup_steps, max(config.total_steps - 1, 0))
  if opt.schedule == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=opt.lr, warmup_steps=warmup,
        decay_steps=max(config.total_steps, warmup + 1), end_value=opt.lr * opt.end_lr_factor)
  if opt.schedule == 'constant':
    return optax.constant_schedule(opt.lr)
  raise errors.UserError(f'unknown optimizer.schedule {opt.schedule!r}; '
                         'known: warmup_cosine, constant')


def decay_mask(params):
  """Weight decay on matrices and embeddings only: not on biases, norms or the logit scale."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def frozen_labels(params, patterns):
  """'frozen' for parameters whose path matches a pattern, else 'trained'."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: 'frozen' if any(re.fullmatch(p, tree.path_name(path)) for p in patterns)
      else 'trained', params)


def build(config):
  opt = config.optimizer
  lr = schedule(config)
  if opt.name == 'adamw':
    base = optax.adamw(lr, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay, mask=decay_mask)
  elif opt.name == 'sgd':
    base = optax.chain(optax.add_decayed_weights(opt.weight_decay, decay_mask),
                       optax.sgd(lr, momentum=opt.b1))
  else:
    raise errors.UserError(f'unknown optimizer.name {opt.name!r}; known: adamw, sgd')
  if opt.grad_clip > 0:
    base = optax.chain(optax.clip_by_global_norm(opt.grad_clip), base)
  frozen = tuple(opt.frozen) if 'frozen' in opt else ()
  if frozen:
    base = optax.multi_transform({'trained': base, 'frozen': optax.set_to_zero()},
                                 lambda params: frozen_labels(params, frozen))
  return base, lr
