"""Captions for built-in scenes, written from a small grammar.

Every caption names every attribute of every object and the arrangement, so a
caption determines its scene's key; the grammar varies the wording (synonyms,
which object comes first, reversed reading order) but never drops information.
"""

from jaxret.data.builtin import scenes as scenes_lib

SIZE_WORDS = {'small': ('small', 'little'), 'large': ('large', 'big')}

TEMPLATES = {
    'single': (
        'a {0} in the {pos}',
        'a {0} at the {pos}',
        'there is a {0} in the {pos}',
        'the {pos} has a {0}',
        'a single {0} in the {pos}',
        'one {0} placed in the {pos}',
    ),
    'horizontal': (
        'a {0} to the left of a {1}',
        'a {1} to the right of a {0}',
        'a {0} on the left and a {1} on the right',
        'a {1} on the right and a {0} on the left',
        'there is a {0} left of a {1}',
        'a {1} is right of a {0}',
    ),
    'vertical': (
        'a {0} above a {1}',
        'a {1} below a {0}',
        'a {0} on top and a {1} at the bottom',
        'a {1} at the bottom and a {0} on top',
        'there is a {0} over a {1}',
        'a {1} is under a {0}',
    ),
    'row': (
        'a {0}, a {1} and a {2} from left to right',
        'a {2}, a {1} and a {0} from right to left',
        'from left to right: a {0}, a {1} and a {2}',
        'a {1} between a {0} on the left and a {2} on the right',
        'a {0} left of a {1} left of a {2}',
        'in a row: a {0}, a {1} and a {2}',
    ),
    'column': (
        'a {0}, a {1} and a {2} from top to bottom',
        'a {2}, a {1} and a {0} from bottom to top',
        'from top to bottom: a {0}, a {1} and a {2}',
        'a {1} between a {0} on top and a {2} at the bottom',
        'a {0} above a {1} above a {2}',
        'in a column: a {0}, a {1} and a {2}',
    ),
}


def _phrase(obj: scenes_lib.Obj, rng):
  words = SIZE_WORDS[obj.size]
  return f'{words[rng.integers(len(words))]} {obj.colour} {obj.shape}'


def captions(scene: scenes_lib.Scene, rng, count: int = 5):
  """`count` captions of `scene` from distinct templates, in random order."""
  templates = TEMPLATES[scene.layout]
  if count > len(templates):
    raise ValueError(f'at most {len(templates)} captions per image, got {count}')
  chosen = rng.choice(len(templates), size=count, replace=False)
  return [templates[t].format(*(_phrase(o, rng) for o in scene.objects),
                              pos=scene.position) for t in chosen]
