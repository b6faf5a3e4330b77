"""Merging converted checkpoint tensors into freshly initialised parameters, with a report.

A converter maps a checkpoint's tensor names to jaxret parameter paths
('text_encoder/encoder/block00/attention/query/kernel'). `merge` then takes
every mapped tensor whose shape matches, and fails on a shape mismatch unless
the path matches one of the `reinit` patterns: a position embedding named
there is resized (the image grid by bilinear interpolation of the 2-D grid,
the CLS row kept), anything else keeps its fresh initialisation. Text
position embeddings longer than the model's `max_len` are cut to it (exact:
positions past `max_len` are never used). The report lists what was loaded,
what was not (kept as initialised) and which checkpoint tensors went unused.
"""

import dataclasses
import os
import re

import jax
import numpy as np
from safetensors import numpy as safetensors_numpy

from jaxret import errors
from jaxret import files
from jaxret import tree

SAFETENSORS = 'model.safetensors'


def read_safetensors(directory):
  """{name: np.ndarray} of `directory/model.safetensors` (NumPy, no PyTorch)."""
  path = os.path.join(directory, SAFETENSORS)
  if not os.path.isfile(path):
    raise errors.UserError(f'no {SAFETENSORS} in {directory} (a Hugging Face model directory '
                           'saved with safe_serialization=True is needed)')
  return safetensors_numpy.load_file(path)


def read_config(directory):
  return files.read_json(os.path.join(directory, 'config.json'),
                         f'no config.json in {directory}')


def flatten(params):
  """{'a/b/c': leaf} of a nested dict of parameters."""
  return {tree.path_name(path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def unflatten_like(params, flat):
  """`params` with each leaf replaced by `flat[path]`."""
  paths = list(flatten(params))
  leaves = [flat[p] for p in paths]
  return jax.tree.unflatten(jax.tree.structure(params), leaves)


@dataclasses.dataclass
class Report:
  loaded: list = dataclasses.field(default_factory=list)
  resized: list = dataclasses.field(default_factory=list)  # (path, from shape, to shape)
  reinitialised: list = dataclasses.field(default_factory=list)  # (path, ckpt, model shape)
  not_loaded: list = dataclasses.field(default_factory=list)
  unused: list = dataclasses.field(default_factory=list)

  def lines(self, source):
    out = [f'{source}: loaded {len(self.loaded)} parameters']
    for path, old, new in self.resized:
      out.append(f'  resized {path}: {old} -> {new}')
    for path, old, new in self.reinitialised:
      out.append(f'  re-initialised {path} (checkpoint {old}, model {new})')
    if self.not_loaded:
      out.append(f'  not loaded (kept as initialised): {", ".join(self.not_loaded)}')
    if self.unused:
      out.append(f'  unused checkpoint tensors: {", ".join(self.unused)}')
    return out


def resize_grid_posemb(posemb, num_tokens, has_cls):
  """(1, [1+]g*g, D) -> (1, num_tokens, D): bilinear resize of the g x g grid."""
  cls, grid = (posemb[:, :1], posemb[:, 1:]) if has_cls else (posemb[:, :0], posemb)
  old = int(round(np.sqrt(grid.shape[1])))
  new = int(round(np.sqrt(num_tokens - cls.shape[1])))
  if old * old != grid.shape[1] or new * new + cls.shape[1] != num_tokens:
    raise errors.UserError(f'cannot resize a position embedding of {posemb.shape[1]} tokens to '
                           f'{num_tokens}: both must be a square grid (plus CLS)')
  grid = grid.reshape(1, old, old, -1).astype(np.float32)
  grid = jax.image.resize(grid, (1, new, new, grid.shape[-1]), method='bilinear')
  return np.concatenate([cls, np.asarray(grid).reshape(1, new * new, -1)], axis=1)


def merge(params, mapped, unused, reinit=(), text_posemb=(), image_posemb=()):
  """Returns (flat {path: value} for every parameter, `Report`).

  Args:
    params: the initialised (or abstract) parameters; their shapes are the target.
    mapped: {jaxret path: np.ndarray} from a converter.
    unused: checkpoint tensor names the converter did not map.
    reinit: regexes of paths whose shape may differ from the checkpoint's.
    text_posemb: paths of text position embeddings (cut to length when longer).
    image_posemb: {path: has_cls} of image position embeddings (resized when named
      in `reinit`).
  """
  flat = flatten(params)
  report = Report(unused=sorted(unused))
  unknown = sorted(set(mapped) - set(flat))
  if unknown:
    raise errors.UserError('the checkpoint maps to parameters the model does not have: '
                           f'{", ".join(unknown)}; check the model config against the '
                           "checkpoint's config.json")
  mismatched = []
  result = {}
  for path, current in flat.items():
    if path not in mapped:
      report.not_loaded.append(path)
      result[path] = current
      continue
    value = np.asarray(mapped[path])
    shape = tuple(current.shape)
    if value.shape == shape:
      result[path] = value.astype(current.dtype)
      report.loaded.append(path)
      continue
    named = any(re.fullmatch(p, path) for p in reinit)
    if path in text_posemb and value.shape[0] >= shape[0] and value.shape[1:] == shape[1:]:
      result[path] = value[:shape[0]].astype(current.dtype)
      report.resized.append((path, value.shape, shape))
      report.loaded.append(path)
    elif named and path in image_posemb:
      result[path] = resize_grid_posemb(value, shape[1], image_posemb[path]).astype(current.dtype)
      report.resized.append((path, value.shape, shape))
      report.loaded.append(path)
    elif named:
      result[path] = current
      report.reinitialised.append((path, value.shape, shape))
    else:
      mismatched.append(f'{path}: checkpoint {value.shape}, model {shape}')
  if mismatched:
    raise errors.UserError(
        'the weights do not match the model: ' + '; '.join(mismatched) +
        '. Fix the model config, or name the parameters in init.reinit to re-initialise '
        '(position embeddings named there are interpolated)')
  return result, report
