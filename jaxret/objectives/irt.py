"""IRT objectives: margin contrastive loss + cross-batch memory + KoLeo (`losses/irt.py`).

Loss settings (`config.loss`): `margin` (β, 0.5), `koleo_weight` (λ),
`memory_size` (K slots; 0: no memory) and `memory_start` (the first step,
0-based, whose batch is written to the memory and scored against it; before
it the memory is empty and adds nothing). Image retrieval (`irt_image`) also
needs `labels` (a kind from `objectives/labels.py`) and `data` (the data
config whose training split those labels describe).
"""

import functools

import jax.numpy as jnp
import numpy as np

from jaxret.losses import irt
from jaxret.objectives import base
from jaxret.objectives import cross_batch_memory
from jaxret.objectives import labels as labels_lib
from jaxret.parallel import shard


class IrtObjective(base.EmbeddingObjective):
  """IRT for text-to-image retrieval (`irt_cross_modal_loss`): image anchors
  against texts and the text memory, text anchors against images and the
  image memory, positives by image id. Memory slots hold (image, text, id)."""

  LOSS_KEYS = ('margin', 'koleo_weight', 'memory_size', 'memory_start')

  def __init__(self, model, mesh, loss_config, tokenizer):
    super().__init__(model, mesh, loss_config, tokenizer)
    self.memory_size = loss_config.memory_size
    self.memory_start = loss_config.memory_start
    self.loss = shard.over_batch(
        functools.partial(irt.irt_cross_modal_loss, margin=loss_config.margin,
                          koleo_weight=loss_config.koleo_weight),
        mesh, replicated=('memory_image', 'memory_text', 'memory_labels'))

  def init_extra(self, params):
    del params
    dim = self.model.embed_dim
    return {'memory': cross_batch_memory.init(self.memory_size, {'image': dim, 'text': dim})}

  def _enqueue(self, memory, entries, step):
    if self.memory_size == 0:
      return memory, jnp.full(entries['label'].shape, -1, jnp.int32)
    return cross_batch_memory.enqueue(memory, entries, step >= self.memory_start, self.mesh)

  def embed(self, params, batch):
    outputs = self.forward(params, batch)
    return {'image_emb': outputs['image_emb'], 'text_emb': outputs['text_emb']}

  def loss_from_embeddings(self, params, extra, embeddings, batch, rng, step):
    del params, rng
    memory, _ = self._enqueue(
        extra['memory'], {'image': embeddings['image_emb'], 'text': embeddings['text_emb'],
                          'label': batch['image_id']}, step)
    loss, metrics = self.loss(image_emb=embeddings['image_emb'], text_emb=embeddings['text_emb'],
                              image_ids=batch['image_id'], memory_image=memory['image'],
                              memory_text=memory['text'], memory_labels=memory['label'])
    metrics['memory_fill'] = jnp.mean(memory['label'] >= 0)
    return loss, metrics, {'memory': memory}


class IrtImageObjective(IrtObjective):
  """IRT for image retrieval (`irt_image_loss`): only the image tower is
  trained; an example's label is its image's class (`config.loss.labels`),
  looked up from its row in the training split. Captions are not used.
  Memory slots hold (descriptor, label)."""

  LOSS_KEYS = IrtObjective.LOSS_KEYS + ('labels', 'data')

  def __init__(self, model, mesh, loss_config, tokenizer):
    super().__init__(model, mesh, loss_config, tokenizer)
    self.label_kind = loss_config.labels
    self.data_config = loss_config.data
    self._labels = None
    self.loss = shard.over_batch(
        functools.partial(irt.irt_image_loss, margin=loss_config.margin,
                          koleo_weight=loss_config.koleo_weight),
        mesh, replicated=('memory_emb', 'memory_labels'))

  def train_labels(self):
    """(num_train,) label of each training row (computed once, when first traced)."""
    if self._labels is None:
      self._labels = np.asarray(
          labels_lib.split_labels(self.label_kind, self.data_config, 'train'))
    return self._labels

  def init_extra(self, params):
    del params
    return {'memory': cross_batch_memory.init(self.memory_size,
                                              {'embedding': self.model.embed_dim})}

  def embed(self, params, batch):
    emb, _ = self.model.apply({'params': params}, batch['image'], train=True,
                              method=self.model.encode_image)
    return {'emb': emb}

  def loss_from_embeddings(self, params, extra, embeddings, batch, rng, step):
    del params, rng
    emb = embeddings['emb']
    labels = jnp.asarray(self.train_labels())[batch['image_id']]
    memory, slots = self._enqueue(extra['memory'], {'embedding': emb, 'label': labels}, step)
    loss, metrics = self.loss(emb=emb, labels=labels, identity=batch['image_id'],
                              memory_slots=slots, memory_emb=memory['embedding'],
                              memory_labels=memory['label'])
    metrics['memory_fill'] = jnp.mean(memory['label'] >= 0)
    return loss, metrics, {'memory': memory}
