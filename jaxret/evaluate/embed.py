"""Batched, jit-compiled embedding of images and captions on the mesh."""

import jax
import numpy as np

from jaxret.data import pipeline
from jaxret.models import capabilities
from jaxret.parallel import host
from jaxret.parallel import mesh as mesh_lib


class Embedder:
  """Embeds arrays in fixed-size global batches (the last one padded), so each
  tower compiles once. Every process passes the same full arrays; each feeds its
  own rows of each batch and gets all results back.

  One unit vector per item (`capabilities.PooledEncoder`), or with `per_token=True`
  the token vectors of a late-interaction model (`capabilities.TokenEncoder`).
  """

  def __init__(self, model, mesh, batch_size, data_config, per_token=False):
    if per_token:
      capabilities.require(model, capabilities.TokenEncoder, 'embedding tokens')
      image_method, text_method = model.encode_image_tokens, model.encode_text_tokens
    else:
      capabilities.require(model, capabilities.PooledEncoder, 'embedding images and captions')
      image_method, text_method = model.encode_image, model.encode_text
    self.mesh = mesh
    self.batch_size = batch_size
    self.local_batch = mesh_lib.check_global_batch(batch_size, mesh, 'eval.batch_size')
    self.data_config = data_config
    self._images = jax.jit(lambda params, images: model.apply(
        {'params': params}, images, method=image_method)[0])
    self._texts = jax.jit(lambda params, tokens, mask: model.apply(
        {'params': params}, tokens, mask, method=text_method)[0])

  def _map(self, fn, params, arrays, prepare=lambda *local: local):
    count = len(arrays[0])
    first = jax.process_index() * self.local_batch
    outputs = []
    for start in range(0, count, self.batch_size):
      chunk = [a[start:start + self.batch_size] for a in arrays]
      pad = self.batch_size - len(chunk[0])
      if pad:  # Repeat the last row so that every batch has the compiled shape.
        chunk = [np.concatenate([c, np.repeat(c[-1:], pad, axis=0)]) for c in chunk]
      local = prepare(*[c[first:first + self.local_batch] for c in chunk])
      result = fn(params, *host.to_global(list(local), self.mesh))
      outputs.append(np.asarray(host.to_host(result))[:self.batch_size - pad])
    return np.concatenate(outputs)

  def images(self, params, images):
    """uint8 (N, H, W, 3) -> (N, D) float32 unit vectors (or (N, P, D) tokens)."""
    return self._map(self._images, params, [images],
                     lambda x: [pipeline.normalize_images(x, self.data_config)])

  def texts(self, params, tokens, mask):
    """(M, L) tokens and mask -> (M, D) float32 unit vectors (or (M, L, D) tokens)."""
    return self._map(self._texts, params, [tokens, mask])
