"""Training batches with grain, and evaluation chunks, from a split's `Records`.

Training iterates over (image, caption) pairs, shuffled per epoch by a seeded
grain index shuffle. Global batch s is pairs [s·B, (s+1)·B) of that stream and
process p takes its contiguous share of it, so the examples seen do not depend
on the number of processes or devices, and the iterator state (a position) is
checkpointed with the model for exact resume.
"""

import grain
import numpy as np


def normalize_images(images, data_config):
  """uint8 (..., H, W, 3) -> float32 normalised with the config's mean and std."""
  mean = np.asarray(data_config.image_mean, np.float32)
  std = np.asarray(data_config.image_std, np.float32)
  return (images.astype(np.float32) / 255.0 - mean) / std


class PairBatches:
  """Assembles a batch from pair indices: images (rendered or decoded on access),
  tokenised captions and image ids. Runs in grain's threads."""

  def __init__(self, records, tokenizer, data_config):
    self.image_index, self.texts = records.pairs()
    self.records = records
    self.tokenizer = tokenizer
    self.data_config = data_config

  def __len__(self):
    return len(self.image_index)

  def __call__(self, pair_indices):
    image_index = self.image_index[pair_indices]
    tokens, mask = self.tokenizer.encode([self.texts[i] for i in pair_indices])
    return {
        'image': normalize_images(self.records.images[image_index], self.data_config),
        'text': tokens,
        'text_mask': mask,
        # The image's row in the split identifies it (user ids may be strings).
        'image_id': image_index.astype(np.int32),
    }


def train_dataset(records, tokenizer, data_config, *, seed, global_batch,
                  process_index=0, process_count=1):
  """An endless grain MapDataset whose element s is this process's part of global batch s."""
  if global_batch % process_count:
    raise ValueError(f'global batch {global_batch} does not split over {process_count} processes')
  assemble = PairBatches(records, tokenizer, data_config)
  local_batch = global_batch // process_count
  dataset = (grain.MapDataset.range(len(assemble))
             .shuffle(seed=seed)
             .repeat(None)
             .batch(local_batch, drop_remainder=True, batch_fn=np.stack))
  return dataset[process_index::process_count].map(assemble)


def train_iterator(dataset, data_config):
  """A checkpointable iterator with background prefetching threads."""
  options = grain.ReadOptions(num_threads=data_config.num_threads,
                              prefetch_buffer_size=data_config.prefetch)
  return iter(dataset.to_iter_dataset(options))


def example_batch(data_config, text_len):
  """Zeros shaped like one training example (for shape inference and init)."""
  size = data_config.image_size
  return {
      'image': np.zeros((1, size, size, 3), np.float32),
      'text': np.zeros((1, text_len), np.int32),
      'text_mask': np.ones((1, text_len), np.int32),
      'image_id': np.zeros((1,), np.int32),
  }
