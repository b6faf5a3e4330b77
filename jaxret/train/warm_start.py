"""Starting a model from a trained jaxret workdir (`config.init.workdir`): a video model
from an image workdir, or any model from another with the same image tower.

  --config.init.workdir=/tmp/jaxret-demo     # trained with configs/demo.py, clip.py, ...
  --config.tokenizer.path=/tmp/jaxret-demo   # its tokenizer: the text tower comes too

On a fresh training state (never on a resume), the workdir's latest checkpoint
replaces the fresh parameters:

  - the image tower (`image_encoder/...`), always. The video tower runs the image
    ViT on every frame under the image tower's parameter names
    (`models/video.py`), so an image tower fits it as it is; the video tower's
    own parameters (`video.OWN_PARAMS`: time embedding, temporal transformer)
    keep their fresh values, unless the workdir's model has them with the same
    shapes (a video workdir). The two ViTs must be the same: the same sizes
    (patch size, width, depth, heads, MLP), the same parameter names and
    shapes. A position embedding of another image size is refused unless
    `init.reinit` names it (then it is resized, as for pretrained weights).
  - everything else (text tower, projections, logit scale, ...) as a whole, and
    only when the two models read the same tokens (the same tokenizer
    vocabulary) and have every such parameter under the same name and shape:
    the new model then starts in the old one's joint embedding space. Otherwise
    it keeps its fresh values and the report says why: a text tower over
    another vocabulary would read other words for the same token ids.

Everything is checked when a fresh state is made (`Source`), before anything is
compiled or saved; the values are read at `load`. A resumed run never reads
the workdir again.
"""

import os
import re

from jaxret import errors
from jaxret.config import workdir as workdir_config
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.inference import checkpoints as checkpoints_lib
from jaxret.inference import restore as restore_lib
from jaxret.models import towers
from jaxret.models import video
from jaxret.models.load import checkpoint
from jaxret.models.load import pretrained
from jaxret.parallel import host

IMAGE_TOWER = 'image_encoder'
SIZES = ('patch_size', 'width', 'depth', 'num_heads', 'mlp_dim')


def _shapes(params):
  return {path: tuple(leaf.shape) for path, leaf in checkpoint.flatten(params).items()}


def _in_image_tower(path):
  return path.split('/')[0] == IMAGE_TOWER


def _frame_vit(paths):
  """The image tower's paths in `paths` that a plain ViT has (not a video tower's own)."""
  return {p for p in paths if _in_image_tower(p) and p.split('/')[1] not in video.OWN_PARAMS}


def _describe(settings):
  """("'mu/8' (patch 8, width 32, ...)", sizes) of the tower `settings` describe."""
  tower = towers.image_tower(settings)
  sizes = tower.sizes()
  text = ', '.join(f'{name.replace("_size", "")} {sizes[name]}' for name in SIZES)
  return f'{tower.variant!r} ({text})', {name: sizes[name] for name in SIZES}


def _listed(paths, limit=4):
  paths = sorted(paths)
  return ', '.join(paths[:limit]) + (f' and {len(paths) - limit} more' if len(paths) > limit
                                     else '')


class Source:
  """The workdir `config.init.workdir`, checked against the model about to be trained
  (`abstract_params`: its parameters' shapes; `tokenizer`: the one it reads)."""

  def __init__(self, config, tokenizer, abstract_params):
    workdir = self.workdir = config.init.workdir
    self.reinit = tuple(config.init.reinit)
    self.has_cls = towers.image_tower(config.model.image).cls_posemb
    if config.init.text or config.init.clip:
      raise errors.UserError('init.workdir and init.text/init.clip would both initialise the '
                             'towers; set only one of them')
    if not os.path.isfile(os.path.join(workdir, workdir_config.FILENAME)):
      raise errors.UserError(f'init.workdir {workdir} is not a trained jaxret workdir (no '
                             f'{workdir_config.FILENAME}); train an image model there first, '
                             'e.g. with configs/demo.py')
    self.config = workdir_config.load(workdir)
    try:
      checkpoints = checkpoints_lib.Checkpoints(workdir, read_only=True)
      try:
        self.step = checkpoints.latest_step()
      finally:
        checkpoints.close()
      if self.step is None:
        raise errors.UserError(f'no checkpoint in {workdir}')
      source_tokenizer = tokenizer_lib.load_workdir(workdir, self.config.data.text_len)
    except (errors.UserError, FileNotFoundError) as e:
      raise errors.UserError(f'init.workdir {workdir} is not a trained jaxret workdir: '
                             f'{e}') from None
    self._check_sizes(config.model.image)
    source_shapes = _shapes(restore_lib.abstract_params(
        restore_lib.build_model(self.config, source_tokenizer), self.config))
    shapes = _shapes(abstract_params)
    self._check_image_tower(source_shapes, shapes)
    self.image_paths = sorted(_frame_vit(shapes) | {
        p for p in set(shapes) & set(source_shapes)
        if _in_image_tower(p) and shapes[p] == source_shapes[p]})
    self.rest_paths, self.rest_reason = self._rest(source_shapes, shapes, source_tokenizer,
                                                   tokenizer)

  def _check_sizes(self, image_settings):
    source, source_sizes = _describe(self.config.model.image)
    target, sizes = _describe(image_settings)
    if source_sizes != sizes:
      raise errors.UserError(
          f'init.workdir {self.workdir} has the image tower {source}, but model.image is '
          f'{target}; the frame ViT must be the same (set model.image.variant and its sizes '
          'to match)')

  def _check_image_tower(self, source_shapes, shapes):
    """Refuses towers whose frame ViTs differ in names, or in shapes not named in reinit."""
    missing = _frame_vit(shapes) - set(source_shapes)
    extra = _frame_vit(source_shapes) - set(shapes)
    if missing or extra:
      differences = ([f'this model has {_listed(missing)}'] if missing else []) + (
          [f'the workdir has {_listed(extra)}'] if extra else [])
      raise errors.UserError(
          f"init.workdir {self.workdir}'s image tower does not match model.image (pool, "
          f'posemb or another setting differs): {"; ".join(differences)}')
    mismatched = [f'{p}: workdir {source_shapes[p]}, model {shapes[p]}'
                  for p in sorted(_frame_vit(shapes)) if source_shapes[p] != shapes[p]
                  and not any(re.fullmatch(r, p) for r in self.reinit)]
    if mismatched:
      raise errors.UserError(
          f"init.workdir {self.workdir}'s image tower has other shapes: {'; '.join(mismatched)}"
          ' (another data.image_size? name the position embedding in init.reinit to resize it)')

  def _rest(self, source_shapes, shapes, source_tokenizer, tokenizer):
    """(paths outside the image tower to copy, why none are) by the rule in the docstring."""
    rest = {p for p in shapes if not _in_image_tower(p)}
    source_rest = {p for p in source_shapes if not _in_image_tower(p)}
    if source_tokenizer.backend.get_vocab() != tokenizer.backend.get_vocab():
      return [], (f'the tokenizers differ (with --config.tokenizer.path={self.workdir} '
                  'this model reads the same tokens)')
    if rest != source_rest or any(shapes[p] != source_shapes[p] for p in rest):
      differing = (rest ^ source_rest) | {p for p in rest & source_rest
                                          if shapes[p] != source_shapes[p]}
      return [], f'their names or shapes differ ({_listed(differing)})'
    return sorted(rest), None

  def load(self, params, mesh):
    """({path: value} for every parameter of `params`, report lines): the workdir's values
    where they are copied (numpy), the others as they are."""
    restored = restore_lib.restore(self.config, self.workdir, self.step, mesh=mesh)
    values = checkpoint.flatten(host.to_host(restored.params))
    copied = self.image_paths + self.rest_paths
    merged, report = checkpoint.merge(
        params, {p: values[p] for p in copied}, unused=(), reinit=self.reinit,
        image_posemb={pretrained.IMAGE_POSEMB: self.has_cls})
    lines = report.lines(f'init.workdir {self.workdir} (step {self.step})')
    lines.append(f'  the image tower: {len(self.image_paths)} parameters; the rest: '
                 + (f'{len(self.rest_paths)} parameters' if self.rest_paths
                    else f'kept as initialised, {self.rest_reason}'))
    return merged, lines


def apply_to_state(source, state, state_shardings, optimizer, objective, mesh):
  """`state` with the parameters `source.load` gives, optimizer and extra state re-created."""
  merged, lines = source.load(state.params, mesh)
  return pretrained.replace_params(state, merged, lines, state_shardings, optimizer, objective)
