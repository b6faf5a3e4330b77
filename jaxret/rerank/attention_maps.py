"""Where a slow model looks: per-word maps over an image's visual tokens, for /explain.

  captioner_cross_attention: the slow captioner's (`models/slow.py`) forward
    decoder's cross-attention while it predicts each word, averaged over heads
    and blocks: which visual tokens it read to generate that word.
  albef_grad_cam: ALBEF's visual grounding (Li et al. 2021, §5): Grad-CAM of the
    ITM score on the cross-attention of one fusion block, mean over heads of
    relu(∂score/∂A) ⊙ A, per text token.

Both take one image's stored visual tokens (T, C) and one tokenised caption
(L,) and return (words' token positions, (words, T) maps). The layers record
their cross-attention weights only in these calls (`layers.Attention`'s
`expose_weights`), so scoring and training run unchanged.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxret.models import albef as albef_lib
from jaxret.models import slow as slow_lib


def _cross_attention(tree, module, leaf):
  """The arrays named `leaf` of the cross-attention layers under `module` (a module
  name on the path), in block order."""
  found = []
  for path, value in jax.tree_util.tree_flatten_with_path(tree)[0]:
    names = [str(getattr(key, 'key', getattr(key, 'idx', key))) for key in path]
    if module in names and 'cross_attention' in names and leaf in names:
      found.append(('/'.join(names), value))
  return [value for _, value in sorted(found, key=lambda item: item[0])]


class WordMaps:
  """A slow model's per-word maps, jit-compiled once per caption length:
  `WordMaps(model)(params, visual (T, C), tokens (L,), mask (L,))` ->
  (kind, (positions of the words in `tokens`, (words, T) maps)), `kind` being
  'cross_attention' (the captioner) or 'grad_cam' (ALBEF, on its middle fusion
  block, as the paper uses its third of six)."""

  def __init__(self, model):
    if not supported(model):
      raise ValueError(f'{type(model).__name__} has no word maps')
    self.model = model
    self.kind = 'cross_attention' if is_captioner(model) else 'grad_cam'
    self._recorded = jax.jit(self._recorded_attention)
    self._grad = jax.jit(self._attention_and_gradient, static_argnums=4)

  def _recorded_attention(self, params, visual, tokens, mask):
    """The forward decoder's cross-attention weights, by block, while scoring."""
    model = self.model
    _, state = model.apply({'params': params}, visual, tokens, mask,
                           method=model.next_token_logits, mutable=['intermediates'])
    return _cross_attention(state['intermediates'], 'forward_decoder', 'weights')

  def _attention_and_gradient(self, params, visual, tokens, mask, block):
    """Fusion block `block`'s cross-attention weights and the ITM score's gradient."""
    model, name = self.model, f'block{block:02d}'
    _, state = model.apply({'params': params}, visual, tokens, mask, method=model.score,
                           mutable=['perturbations', 'intermediates'])

    def score(perturbations):
      return model.apply({'params': params, 'perturbations': perturbations}, visual, tokens,
                         mask, method=model.score)[0]

    grad = jax.grad(score)(state['perturbations'])
    return (_cross_attention(state['intermediates'], name, 'weights')[0],
            _cross_attention(grad, name, 'attention_weights')[0])

  def captioner_cross_attention(self, params, visual, tokens, mask):
    """(positions of the predicted words in `tokens`, (words, T) attention maps)."""
    real = int(np.sum(mask > 0))
    blocks = self._recorded(params, jnp.asarray(visual, jnp.float32)[None],
                            jnp.asarray(tokens)[None], jnp.asarray(mask)[None])
    # (blocks, 1, heads, L-1, T): position t reads token t and predicts token t + 1.
    maps = np.mean(np.stack([np.asarray(b) for b in blocks]), axis=(0, 1, 2))
    return list(range(1, real)), maps[:real - 1]

  def albef_grad_cam(self, params, visual, tokens, mask, block):
    """(positions of the real tokens, (tokens, T) Grad-CAM maps) on fusion block `block`."""
    real = int(np.sum(mask > 0))
    weights, grad = self._grad(params, jnp.asarray(visual, jnp.float32)[None],
                               jnp.asarray(tokens)[None], jnp.asarray(mask)[None], block)
    cam = np.mean(np.maximum(np.asarray(grad), 0) * np.asarray(weights), axis=1)[0]
    return list(range(real)), cam[:real]  # Mean over heads: (L, T).

  def __call__(self, params, visual, tokens, mask):
    if self.kind == 'cross_attention':
      return self.kind, self.captioner_cross_attention(params, visual, tokens, mask)
    depth = len([name for name in params['fusion_encoder'] if name.startswith('block')])
    return self.kind, self.albef_grad_cam(params, visual, tokens, mask, depth // 2)


def is_captioner(model):
  return isinstance(model, slow_lib.SlowCaptioner)


def supported(model):
  """Whether the slow model has one of the maps above."""
  return isinstance(model, (slow_lib.SlowCaptioner, albef_lib.Albef))
