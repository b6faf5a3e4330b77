"""Scenes of the built-in dataset: objects, layouts and one-attribute variants.

A scene is a layout plus one to three objects, each a (size, colour, shape).
Its canonical key names every attribute and the spatial arrangement, so two
scenes with the same key are the same description; captions and images are
both drawn from a scene.
"""

import dataclasses

SHAPES = ('circle', 'square', 'triangle', 'cross')
COLOURS = ('red', 'green', 'blue', 'yellow', 'purple', 'white')
SIZES = ('small', 'large')
# Where a lone object sits.
POSITIONS = ('top left', 'top right', 'bottom left', 'bottom right', 'center')
# Layouts by object count. Objects are stored in reading order: left to right
# for 'horizontal' and 'row', top to bottom for 'vertical' and 'column'.
LAYOUTS = {1: ('single',), 2: ('horizontal', 'vertical'), 3: ('row', 'column')}
COUNT_PROBS = {1: 0.2, 2: 0.5, 3: 0.3}


@dataclasses.dataclass(frozen=True)
class Obj:
  size: str
  colour: str
  shape: str

  def words(self):
    return f'{self.size} {self.colour} {self.shape}'


@dataclasses.dataclass(frozen=True)
class Scene:
  layout: str
  objects: tuple
  position: str = ''  # Only for the 'single' layout.

  @property
  def key(self):
    """Canonical description: equal keys mean indistinguishable captions."""
    objects = ' | '.join(o.words() for o in self.objects)
    return f'{self.layout}: {objects}' + (f' @ {self.position}' if self.position else '')


def sample_object(rng):
  return Obj(size=SIZES[rng.integers(len(SIZES))],
             colour=COLOURS[rng.integers(len(COLOURS))],
             shape=SHAPES[rng.integers(len(SHAPES))])


def sample_scene(rng):
  counts = sorted(COUNT_PROBS)
  count = counts[rng.choice(len(counts), p=[COUNT_PROBS[c] for c in counts])]
  layouts = LAYOUTS[count]
  layout = layouts[rng.integers(len(layouts))]
  objects = tuple(sample_object(rng) for _ in range(count))
  position = POSITIONS[rng.integers(len(POSITIONS))] if count == 1 else ''
  return Scene(layout, objects, position)


def _replace_object(scene, index, **change):
  objects = list(scene.objects)
  objects[index] = dataclasses.replace(objects[index], **change)
  return dataclasses.replace(scene, objects=tuple(objects))


def one_change_variants(scene):
  """All scenes that differ from `scene` in exactly one attribute or relation.

  Changes: one object's colour, shape or size; a lone object's position; or,
  with several objects, two objects swapping places (a swapped relation, which
  keeps the bag of words identical).
  """
  variants = []
  for i, obj in enumerate(scene.objects):
    for colour in COLOURS:
      if colour != obj.colour:
        variants.append(_replace_object(scene, i, colour=colour))
    for shape in SHAPES:
      if shape != obj.shape:
        variants.append(_replace_object(scene, i, shape=shape))
    for size in SIZES:
      if size != obj.size:
        variants.append(_replace_object(scene, i, size=size))
  if scene.layout == 'single':
    variants += [dataclasses.replace(scene, position=p)
                 for p in POSITIONS if p != scene.position]
  n = len(scene.objects)
  for i in range(n):
    for j in range(i + 1, n):
      objects = list(scene.objects)
      objects[i], objects[j] = objects[j], objects[i]
      if objects[i] != objects[j]:
        variants.append(dataclasses.replace(scene, objects=tuple(objects)))
  return variants


def near_duplicate_groups(rng, num_scenes, group_size, exclude=frozenset()):
  """Scenes in groups of near-duplicates, every key unique and not in `exclude`.

  Each group is a base scene and up to `group_size - 1` of its one-change
  variants, so a test caption has exactly one right image while its nearest
  distractors differ from it by a single word or by word order.
  """
  return grouped_scenes(rng, num_scenes, group_size, exclude)[0]


def grouped_scenes(rng, num_scenes, group_size, exclude=frozenset()):
  """`near_duplicate_groups`'s scenes and each one's group number (a list of ints)."""
  scenes, groups, seen = [], [], set(exclude)
  while len(scenes) < num_scenes:
    base = sample_scene(rng)
    if base.key in seen:
      continue
    group = [base]
    seen.add(base.key)
    variants = one_change_variants(base)
    for index in rng.permutation(len(variants)):
      if len(group) >= min(group_size, num_scenes - len(scenes)):
        break
      variant = variants[index]
      if variant.key not in seen:
        group.append(variant)
        seen.add(variant.key)
    groups.extend([groups[-1] + 1 if groups else 0] * len(group))
    scenes.extend(group)
  return scenes, groups


def random_scenes(rng, num_scenes, exclude=frozenset()):
  """Independent random scenes whose keys are not in `exclude` (repeats allowed)."""
  scenes = []
  while len(scenes) < num_scenes:
    scene = sample_scene(rng)
    if scene.key not in exclude:
      scenes.append(scene)
  return scenes

