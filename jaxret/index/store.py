"""The gallery index under `DIR/index/`: a ScaNN searcher, the gallery ids and a manifest.

The manifest records the model step, embedding dimension, normalisation, item
count, build parameters, build time, the split the gallery came from and a
SHA-256 of every file; loading checks all of them, so a damaged index or one
from another model is refused. `probe.npz` holds a few exported captions with
their embeddings, so that a server can check that the model it restored is the
one that made the index (same step number is not enough after a retrain).

Items are added, updated and deleted by the user's image ids (ints or strings)
without retraining the tree or the codebook (ScaNN's upsert/delete); `save`
rewrites the folder atomically, so readers see the old index or the new one.

Each item may carry metadata (`metadata.Table`: strings, numbers, dates) and
the index keeps the float32 vectors (`vectors.npy`), so a filtered search is
exact in its set: `search(..., passed=mask)` returns only rows that pass. The
method follows the filter's selectivity (the share of rows that pass, counted
from the mask): exact search over the passing rows when few pass (or the index
is brute force), else ScaNN asked for k / selectivity x `FILTER_OVERFETCH`
candidates, those that fail dropped, and any query left with fewer than k
searched exactly.
"""

import dataclasses
import hashlib
import json
import os
import threading
import time

import numpy as np

from jaxret import errors
from jaxret import files
from jaxret.index import exact
from jaxret.index import metadata as metadata_lib
from jaxret.index import scann_index

MANIFEST = 'manifest.json'
IDS = 'ids.npy'
PROBE = 'probe.npz'
SEARCHER = 'scann'
VECTORS = 'vectors.npy'
METADATA = 'metadata.npz'
# Filtered search: exact over the passing rows below this selectivity, else ScaNN with
# over-fetch (measured by benchmarks/filters.py).
FILTER_EXACT_BELOW = 0.05
FILTER_OVERFETCH = 4.0
UNIT_NORM_ATOL = 1e-3


def directory(workdir):
  return os.path.join(workdir, 'index')


def _sha256(path):
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def checksums(root):
  """SHA-256 of every file under `root` (but the manifest), by relative path."""
  sums = {}
  for folder, _, names in os.walk(root):
    for name in sorted(names):
      full = os.path.join(folder, name)
      relative = os.path.relpath(full, root)
      if relative != MANIFEST:
        sums[relative] = _sha256(full)
  return dict(sorted(sums.items()))


def verified_manifest(store_dir, what, missing):
  """The manifest of a side store (token or visual tokens) in `store_dir`, checked against
  its files' checksums; `missing` is the one-line reason where there is none."""
  manifest = files.read_json(os.path.join(store_dir, MANIFEST), missing)
  if checksums(store_dir) != manifest['checksums']:
    raise errors.UserError(f'the {what} in {store_dir} are damaged; rebuild them with '
                           '--mode=index')
  return manifest


def _normalisation(vectors):
  norms = np.linalg.norm(vectors, axis=1)
  return 'l2' if np.allclose(norms, 1, atol=UNIT_NORM_ATOL) else 'none'


def _validated_ids(ids):
  ids = np.asarray(ids)
  if ids.ndim != 1 or ids.dtype.kind not in 'iuU':
    raise errors.UserError(f'image ids must be a 1-D array of ints or strings, not {ids.dtype}')
  if len(np.unique(ids)) != len(ids):
    raise errors.UserError('image ids must be unique')
  return ids.astype(np.int64) if ids.dtype.kind in 'iu' else ids


def _write(out_dir, searcher, ids, manifest, probe, vectors, table):
  """Writes a complete index to a staging folder, then swaps it in for `out_dir`."""
  # The old index is removed only once the new one is complete.
  with files.staged_directory(out_dir) as staging:
    scann_index.save(searcher, os.path.join(staging, SEARCHER))
    np.save(os.path.join(staging, IDS), ids, allow_pickle=False)
    if vectors is not None:  # None: an index built before vectors were kept.
      np.save(os.path.join(staging, VECTORS), vectors, allow_pickle=False)
    np.savez(os.path.join(staging, METADATA), **table.arrays())
    if probe is not None:
      np.savez(os.path.join(staging, PROBE), texts=np.asarray(probe[0], np.str_),
               embeddings=np.asarray(probe[1], np.float32))
    manifest = dict(manifest, checksums=checksums(staging))
    with open(os.path.join(staging, MANIFEST), 'w') as f:
      json.dump(manifest, f, indent=2)
  return manifest


def build(image_emb, image_ids, *, step, index_config, out_dir, split=None, probe=None,
          metadata=None):
  """Builds the index of `image_emb` and replaces `out_dir` atomically.

  Args:
    image_emb: (N, D) gallery embeddings.
    image_ids: (N,) unique user ids, ints or strings.
    step: the checkpoint step that made the embeddings.
    index_config: `config.index`.
    out_dir: the index folder (`directory(workdir)`).
    split: the data split the gallery images come from (for serving thumbnails).
    probe: optional `(texts, text_emb)`: a few captions and their embeddings by
      the same model, which `check_model` compares against at serving time.
    metadata: optional list of N dicts (field: string, number or date), one per item.
  Returns:
    The manifest.
  """
  image_emb = np.asarray(image_emb, np.float32)
  if image_emb.ndim != 2 or not len(image_emb):
    raise errors.UserError(f'cannot index embeddings of shape {image_emb.shape}')
  image_ids = _validated_ids(image_ids)
  if len(image_ids) != len(image_emb):
    raise errors.UserError(f'{len(image_emb)} embeddings but {len(image_ids)} ids')
  table = metadata_lib.Table(len(image_ids))
  if metadata is not None:
    if len(metadata) != len(image_ids):
      raise errors.UserError(f'{len(metadata)} metadata entries for {len(image_ids)} items')
    for row, entry in enumerate(metadata):
      table.check(entry, f'metadata of item {image_ids[row]!r}')
      table.set_row(row, entry)  # A field's type is fixed once its first value is set.
  params = scann_index.build_params(len(image_emb), image_emb.shape[1], index_config)
  start = time.time()
  searcher = scann_index.build(image_emb, params)
  build_seconds = time.time() - start
  manifest = {
      'model_step': int(step),
      'embedding_dim': int(image_emb.shape[1]),
      'normalisation': _normalisation(image_emb),
      'num_items': int(len(image_emb)),
      'id_type': 'int' if image_ids.dtype.kind == 'i' else 'str',
      'ids_file': IDS,
      'split': split,
      'build_params': params,
      'build_seconds': build_seconds,
      'built_at': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
      'updated_at': None,
      # Items changed since the build; the tree and codebook were trained
      # without them, so rebuild once they are a large share of the gallery.
      'changes_since_build': {'added': 0, 'updated': 0, 'deleted': 0},
  }
  return _write(out_dir, searcher, image_ids, manifest, probe, image_emb, table)


@dataclasses.dataclass(frozen=True)
class FilterMask:
  """The rows that passed `expression` when the index was at `version` (changes count up)."""
  expression: dict
  passed: np.ndarray
  version: int


class Index:
  """A loaded gallery index: search, upsert and delete by user id, and save.

  Every method is thread-safe: searches and changes take one lock, so a search
  never sees the searcher and the id table out of step.
  """

  def __init__(self, searcher, ids, manifest, index_dir, probe=None, vectors=None, table=None):
    self.searcher = searcher
    self.ids = ids
    self.vectors = vectors  # (N, D) float32, or None for an index built before they were kept.
    self.metadata = table if table is not None else metadata_lib.Table(len(ids))
    self.manifest = manifest
    self.directory = index_dir
    self.probe = probe
    self._row_of = {image_id: row for row, image_id in enumerate(ids.tolist())}
    self._reorder = manifest['build_params'].get('reorder', 0)
    self._num_leaves = manifest['build_params'].get('num_leaves', 0)
    self._lock = threading.Lock()
    self._version = 0  # Counts changes, so that a filter's mask from before one is redone.

  def __len__(self):
    return len(self.ids)

  def __contains__(self, image_id):
    return image_id in self._row_of

  @property
  def id_type(self):
    return int if self.ids.dtype.kind in 'iu' else str

  def parse_id(self, text):
    """An id as the index stores it, from its text form (a URL parameter)."""
    if self.id_type is str:
      return text
    try:
      return int(text)
    except ValueError:
      raise errors.UserError(f'image id {text!r} is not an integer; this index has integer '
                             'ids') from None

  def search(self, queries, k):
    """(Q, D) queries -> user ids (Q, k) and scores (Q, k), best first."""
    with self._lock:
      rows, scores = scann_index.search(self.searcher, queries, k, self._reorder,
                                        self._num_leaves)
      return self.ids[rows], scores

  def vector_of(self, image_id):
    """The stored (D,) vector of a gallery item."""
    with self._lock:
      if image_id not in self._row_of:
        raise errors.UserError(f'unknown image id {image_id!r}: it is not in the gallery')
      if self.vectors is None:
        raise errors.UserError('this index was built before it kept its vectors; rebuild it '
                               'with --mode=index')
      return self.vectors[self._row_of[image_id]].copy()

  def filter_mask(self, expression):
    """The rows passing a metadata filter (`metadata.Table.mask`), as a `FilterMask`;
    refuses an unknown field or a malformed expression."""
    if self.vectors is None:
      raise errors.UserError('this index was built before filters were supported; rebuild it '
                             'with --mode=index')
    with self._lock:
      return FilterMask(expression, self.metadata.mask(expression), self._version)

  def search_filtered(self, queries, k, mask):
    """(Q, D) queries -> ids (Q, k') and scores of the best rows that pass `mask` (a
    `FilterMask`, redone if the index changed since), k' = min(k, rows that pass), and
    {'matched': rows that pass, 'strategy': 'exact' or 'scann'}."""
    queries = np.asarray(queries, np.float32)
    with self._lock:
      passed = mask.passed
      if mask.version != self._version:
        passed = self.metadata.mask(mask.expression)
      matched = int(np.count_nonzero(passed))
      k = min(k, matched)
      if not k:
        return (self.ids[:0][None].repeat(len(queries), 0),
                np.zeros((len(queries), 0), np.float32), {'matched': 0, 'strategy': 'exact'})
      selectivity = matched / len(self.ids)
      if self.manifest['build_params']['method'] == 'brute_force' or (
          selectivity < FILTER_EXACT_BELOW):
        rows = np.flatnonzero(passed)
        found, scores = exact.top_k(queries, self.vectors[rows], k)
        return self.ids[rows[found]], scores, {'matched': matched, 'strategy': 'exact'}
      fetch = min(len(self.ids), int(np.ceil(k / selectivity * FILTER_OVERFETCH)) + k)
      candidates, candidate_scores = scann_index.search(self.searcher, queries, fetch,
                                                        self._reorder, self._num_leaves)
      out_rows = np.zeros((len(queries), k), np.int64)
      out_scores = np.zeros((len(queries), k), np.float32)
      for q, (row_list, score_list) in enumerate(zip(candidates, candidate_scores)):
        keep = passed[row_list] & ~np.isnan(score_list)
        if keep.sum() >= k:
          out_rows[q], out_scores[q] = row_list[keep][:k], score_list[keep][:k]
        else:  # Too few candidates passed: this query is searched exactly.
          rows = np.flatnonzero(passed)
          found, scores = exact.top_k(queries[q:q + 1], self.vectors[rows], k)
          out_rows[q], out_scores[q] = rows[found[0]], scores[0]
      return self.ids[out_rows], out_scores, {'matched': matched, 'strategy': 'scann'}

  def check_ids(self, ids):
    """User ids (from JSON or Python) as the index stores them; refuses other types."""
    want_str = self.id_type is str
    checked = []
    for image_id in ids:
      if isinstance(image_id, (np.integer, np.str_)):
        image_id = image_id.item()
      if isinstance(image_id, bool) or not isinstance(image_id, (int, str)):
        raise errors.UserError(f'image id {image_id!r} must be an int or a string')
      if isinstance(image_id, str) != want_str:
        raise errors.UserError(f'image id {image_id!r} is a {type(image_id).__name__}, but this '
                               f'index has {self.id_type.__name__} ids')
      checked.append(image_id)
    if len(set(checked)) != len(checked):
      raise errors.UserError('the same image id appears twice in one request')
    return checked

  def upsert(self, ids, embeddings, metadata=None):
    """Adds items, or replaces the embeddings of ids already present.

    `metadata`: optional list of one dict or None per id; a dict replaces the
    item's metadata, None keeps an existing item's (a new item then has none).
    Returns `(added, updated)` counts. Nothing changes if any input is refused.
    """
    ids = self.check_ids(ids)
    metadata = [None] * len(ids) if metadata is None else metadata
    new_types = {}
    for image_id, entry in zip(ids, metadata):
      if entry is not None:
        self.metadata.check(entry, f'metadata of item {image_id!r}', new_types)
    embeddings = np.asarray(embeddings, np.float32)
    dim = self.manifest['embedding_dim']
    if embeddings.ndim != 2 or embeddings.shape != (len(ids), dim):
      raise errors.UserError(f'expected {len(ids)} embeddings of dimension {dim}, got an array '
                             f'of shape {embeddings.shape}')
    if not np.isfinite(embeddings).all():
      raise errors.UserError('embeddings must be finite (no NaN or Inf)')
    if self.manifest['normalisation'] == 'l2':
      norms = np.linalg.norm(embeddings, axis=1)
      bad = np.flatnonzero(np.abs(norms - 1) > UNIT_NORM_ATOL)
      if len(bad):
        raise errors.UserError(f'embedding for id {ids[bad[0]]!r} has norm {norms[bad[0]]:.4f}; '
                               'this index holds L2-normalised embeddings')
    with self._lock:
      rows = [self._row_of.get(image_id) for image_id in ids]
      scann_index.upsert(self.searcher, rows, embeddings)
      new = [image_id for image_id, row in zip(ids, rows) if row is None]
      if new:
        new_ids = np.asarray(new, np.str_ if self.id_type is str else np.int64)
        self.ids = np.concatenate([self.ids, new_ids])
        for row, image_id in enumerate(new, len(self.ids) - len(new)):
          self._row_of[image_id] = row
        self.metadata.grow(len(self.ids))
        if self.vectors is not None:
          self.vectors = np.concatenate([self.vectors, np.zeros((len(new), dim), np.float32)])
      for image_id, vector, entry in zip(ids, embeddings, metadata):
        row = self._row_of[image_id]
        if self.vectors is not None:
          self.vectors[row] = vector
        if entry is not None:
          self.metadata.set_row(row, entry)
      self._version += 1
      changes = self.manifest['changes_since_build']
      changes['added'] += len(new)
      changes['updated'] += len(ids) - len(new)
      self.manifest['num_items'] = len(self.ids)
      return len(new), len(ids) - len(new)

  def delete(self, ids):
    """Deletes items by id; refuses (and deletes nothing) if any id is unknown."""
    ids = self.check_ids(ids)
    with self._lock:
      unknown = [image_id for image_id in ids if image_id not in self._row_of]
      if unknown:
        shown = ', '.join(repr(i) for i in unknown[:5]) + (' ...' if len(unknown) > 5 else '')
        raise errors.UserError(f'unknown image ids: {shown}; nothing was deleted')
      if len(ids) >= len(self.ids):
        raise errors.UserError('cannot delete every item: an index needs at least one; '
                               'rebuild it with --mode=index instead')
      for image_id in ids:
        # ScaNN moves the last row into the deleted one; the id table follows.
        row, last = self._row_of.pop(image_id), len(self.ids) - 1
        scann_index.delete(self.searcher, row)
        if row != last:
          moved = self.ids[last].item()
          self.ids[row] = moved
          self._row_of[moved] = row
          self.metadata.move(last, row)
          if self.vectors is not None:
            self.vectors[row] = self.vectors[last]
        self.ids = self.ids[:last]
        self.metadata.truncate(last)
        if self.vectors is not None:
          self.vectors = self.vectors[:last]
      self._version += 1
      self.manifest['changes_since_build']['deleted'] += len(ids)
      self.manifest['num_items'] = len(self.ids)
      return len(ids)

  def save(self, out_dir=None):
    """Writes the index (with its changes) to `out_dir` (default: where it was loaded)."""
    with self._lock:
      self.manifest['updated_at'] = time.strftime('%Y-%m-%dT%H:%M:%S%z')
      self.manifest = _write(out_dir or self.directory, self.searcher, self.ids.copy(),
                             self.manifest, self.probe, self.vectors, self.metadata)
      return self.manifest


def load(index_dir, expected_dim=None, expected_step=None):
  """Loads and verifies the index in `index_dir` (which may have been moved or copied)."""
  manifest_path = os.path.join(index_dir, MANIFEST)
  if not os.path.exists(manifest_path):
    raise errors.UserError(f'no index in {index_dir}; run --mode=index first')
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.UserError(f'index manifest {manifest_path} is unreadable ({e}); '
                           'rebuild it with --mode=index') from e
  found = checksums(index_dir)
  if found != manifest.get('checksums'):
    changed = sorted(set(found.items()) ^ set(manifest.get('checksums', {}).items()))
    names = sorted({name for name, _ in changed})
    raise errors.UserError(f'index in {index_dir} is damaged (files differ from its manifest: '
                           f'{", ".join(names)}); rebuild it with --mode=index')
  if expected_dim is not None and manifest['embedding_dim'] != expected_dim:
    raise errors.UserError(f'index has {manifest["embedding_dim"]}-d embeddings but the model '
                           f'makes {expected_dim}-d ones; rebuild it with --mode=index')
  if expected_step is not None and manifest['model_step'] != expected_step:
    raise errors.UserError(f'index was built from step {manifest["model_step"]}, not step '
                           f'{expected_step}; rebuild it with --mode=index')
  manifest.setdefault('changes_since_build', {'added': 0, 'updated': 0, 'deleted': 0})
  ids = np.load(os.path.join(index_dir, manifest['ids_file']), allow_pickle=False)
  probe = None
  if os.path.exists(os.path.join(index_dir, PROBE)):
    with np.load(os.path.join(index_dir, PROBE), allow_pickle=False) as saved:
      probe = (saved['texts'], saved['embeddings'])
  searcher = scann_index.load(os.path.join(index_dir, SEARCHER))
  if searcher.size() != len(ids) or len(ids) != manifest['num_items']:
    raise errors.UserError(f'index in {index_dir} is inconsistent ({searcher.size()} vectors, '
                           f'{len(ids)} ids, manifest says {manifest["num_items"]}); rebuild it '
                           'with --mode=index')
  vectors, table = None, None
  if os.path.exists(os.path.join(index_dir, VECTORS)):
    vectors = np.load(os.path.join(index_dir, VECTORS), allow_pickle=False)
  if os.path.exists(os.path.join(index_dir, METADATA)):
    with np.load(os.path.join(index_dir, METADATA), allow_pickle=False) as saved:
      table = metadata_lib.from_arrays(saved)
  if (vectors is not None and len(vectors) != len(ids)) or (
      table is not None and table.num_rows != len(ids)):
    raise errors.UserError(f'index in {index_dir} is inconsistent (vectors or metadata do not '
                           'match its ids); rebuild it with --mode=index')
  return Index(searcher, ids, manifest, index_dir, probe, vectors, table)


def check_model(index, embed_texts, atol=2e-3):
  """Refuses a model whose embeddings of the index's probe captions differ from the export's.

  `embed_texts(texts) -> (N, D)`. Passes silently for an index without a probe.
  """
  if index.probe is None:
    return
  texts, expected = index.probe
  found = np.asarray(embed_texts([str(t) for t in texts]), np.float32)
  if found.shape != expected.shape:
    raise errors.UserError(f'the model makes embeddings of shape {found.shape[1:]}, the index '
                           f'holds {expected.shape[1:]}; rebuild it with --mode=export and '
                           '--mode=index')
  error = float(np.max(np.abs(found - expected)))
  if error > atol:
    raise errors.UserError(
        f'the restored model (step {index.manifest["model_step"]}) is not the one that made this '
        f'index: its embeddings of the index\'s probe captions differ by up to {error:.3g}; '
        'rebuild it with --mode=export and --mode=index')
