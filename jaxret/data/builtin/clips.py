"""Clips of the built-in video data: objects, events in time order, and their captions.

A clip is one to three objects (a colour and a shape, shapes distinct) and one
or two events, each about its own object, in time order: an object moves
left, right, up or down, appears, disappears, or changes colour. Objects
without an event stay still. Captions come from a grammar that names every
event, its object and their order ("a red circle moves left, then a blue
square appears"), so a caption determines its clip's key.

Temporal near-duplicates (the test gallery's groups): the same clip played
backwards (`reversed_clip`: the events in the opposite order, each undone: a
move in the opposite direction, an appearance for a disappearance, the colour
change the other way) and the same events in the other order (`swapped`).
A clip and its reversal are the same frames in the opposite order, so a model
that averages its frames cannot tell them apart.
"""

import dataclasses

from jaxret.data.builtin import scenes as scenes_lib

SHAPES = scenes_lib.SHAPES
COLOURS = scenes_lib.COLOURS
DIRECTIONS = ('left', 'right', 'up', 'down')
OPPOSITE = {'left': 'right', 'right': 'left', 'up': 'down', 'down': 'up'}
KINDS = ('move', 'appear', 'disappear', 'recolour')
UNDO = {'move': 'move', 'appear': 'disappear', 'disappear': 'appear', 'recolour': 'recolour'}


@dataclasses.dataclass(frozen=True)
class Event:
  """`kind` of object `target` (an index into the clip's objects); `value`: the
  direction of a move, the new colour of a recolour, '' otherwise."""
  kind: str
  target: int
  value: str = ''


@dataclasses.dataclass(frozen=True)
class Clip:
  """`objects`: ((colour, shape), ...) as they first look; `starts`: each object's
  first position (x, y), in 64-pixel units; `events` in time order."""
  objects: tuple
  starts: tuple
  events: tuple

  @property
  def key(self):
    """What the captions say: equal keys mean indistinguishable captions."""
    return tuple((e.kind, self.objects[e.target], e.value) for e in self.events)


def _undo(clip, event):
  colour, _ = clip.objects[event.target]
  if event.kind == 'move':
    return Event('move', event.target, OPPOSITE[event.value])
  if event.kind == 'recolour':
    return Event('recolour', event.target, colour)
  return Event(UNDO[event.kind], event.target)


def final_objects(clip):
  """How the objects look at the end of `clip` (after its colour changes)."""
  objects = list(clip.objects)
  for event in clip.events:
    if event.kind == 'recolour':
      objects[event.target] = (event.value, objects[event.target][1])
  return tuple(objects)


def end_positions(clip, step):
  """Each object's last position, moved `step` pixels by its move event."""
  positions = [list(p) for p in clip.starts]
  for event in clip.events:
    if event.kind == 'move':
      dx, dy = MOVES[event.value]
      positions[event.target][0] += dx * step
      positions[event.target][1] += dy * step
  return tuple(tuple(p) for p in positions)


MOVES = {'left': (-1, 0), 'right': (1, 0), 'up': (0, -1), 'down': (0, 1)}
MOVE_STEP = 20  # Pixels (64-pixel units) an object travels in a move.


def reversed_clip(clip):
  """`clip` played backwards: what a caption of its reversed frames says (the
  dataset renders those frames by reversing `clip`'s, so that they are exactly
  the same frames)."""
  return Clip(objects=final_objects(clip), starts=end_positions(clip, MOVE_STEP),
              events=tuple(_undo(clip, e) for e in reversed(clip.events)))


def swapped(clip):
  """`clip`'s two events in the other order (same objects, same starting places)."""
  return dataclasses.replace(clip, events=tuple(reversed(clip.events)))


VERBS = {
    'move': ('moves {value}', 'slides {value}', 'goes {value}'),
    'appear': ('appears', 'shows up', 'comes into view'),
    'disappear': ('disappears', 'vanishes', 'goes away'),
    'recolour': ('turns {value}', 'changes to {value}', 'becomes {value}'),
}
TEMPLATES = {
    1: ('{0}', 'in this clip {0}', 'we see that {0}', 'a clip where {0}', 'here {0}',
        'watch as {0}'),
    2: ('{0}, then {1}', 'first {0}, then {1}', '{0} and then {1}', '{0}, after that {1}',
        '{0} before {1}', 'after {0}, {1}'),
}


def _clause(clip, event, rng):
  colour, shape = clip.objects[event.target]
  verbs = VERBS[event.kind]
  return f'a {colour} {shape} ' + verbs[rng.integers(len(verbs))].format(value=event.value)


def captions(clip, rng, count):
  """`count` captions of `clip` from distinct templates, in random order."""
  templates = TEMPLATES[len(clip.events)]
  if count > len(templates):
    raise ValueError(f'at most {len(templates)} captions per clip, got {count}')
  chosen = rng.choice(len(templates), size=count, replace=False)
  return [templates[t].format(*(_clause(clip, e, rng) for e in clip.events)) for t in chosen]
