"""Draws a scene into an RGB image with numpy, with jitter in place, size and colour."""

import numpy as np

from jaxret.data.builtin import scenes as scenes_lib

RGB = {
    'red': (220, 45, 45),
    'green': (45, 180, 65),
    'blue': (55, 85, 235),
    'yellow': (235, 215, 45),
    'purple': (160, 65, 205),
    'white': (240, 240, 240),
}
# Radii in pixels of a 64-pixel image; three-object layouts use smaller large objects.
RADIUS = {'small': (4.5, 6.0), 'large': (9.0, 11.0)}
RADIUS_CROWDED = {'small': (4.5, 6.0), 'large': (8.0, 9.5)}
ANCHORS = {
    'top left': (16, 16), 'top right': (48, 16), 'bottom left': (16, 48),
    'bottom right': (48, 48), 'center': (32, 32),
}


def _shape_mask(shape, dx, dy, r):
  if shape == 'circle':
    return dx**2 + dy**2 <= r**2
  if shape == 'square':
    return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
  if shape == 'triangle':  # Apex up, base 0.8 r below the centre.
    return (dy >= -r) & (dy <= 0.8 * r) & (np.abs(dx) <= (dy + r) / 1.8)
  if shape == 'cross':
    arm = 0.33 * r
    return (((np.abs(dx) <= r) & (np.abs(dy) <= arm))
            | ((np.abs(dy) <= r) & (np.abs(dx) <= arm)))
  raise ValueError(f'unknown shape {shape!r}')


def _centres(scene, radii, rng):
  """Object centres (x, y) in 64-pixel units; the layout's relation always holds."""
  u = rng.uniform
  if scene.layout == 'single':
    ax, ay = ANCHORS[scene.position]
    return [(ax + u(-4, 4), ay + u(-4, 4))]
  if scene.layout in ('horizontal', 'vertical'):
    while True:
      a = (u(10, 26), u(14, 50))
      b = (u(38, 54), u(14, 50))
      # The main axis must dominate so that left/right (above/below) is unambiguous.
      if abs(a[1] - b[1]) < abs(a[0] - b[0]) - 8:
        break
    centres = [a, b]
  else:  # 'row' and 'column'.
    line = u(20, 44)
    centres = [(x + u(-2, 2), line + u(-3, 3)) for x in (11, 32, 53)]
  if scene.layout in ('vertical', 'column'):
    centres = [(y, x) for x, y in centres]
  # Keep every object inside the frame.
  return [(min(max(x, r), 64 - r), min(max(y, r), 64 - r))
          for (x, y), r in zip(centres, radii)]


def render(scene: scenes_lib.Scene, rng: np.random.Generator, image_size: int = 64):
  """Returns a (image_size, image_size, 3) uint8 image of `scene`."""
  scale = image_size / 64
  table = RADIUS_CROWDED if len(scene.objects) == 3 else RADIUS
  radii = [rng.uniform(*table[o.size]) for o in scene.objects]
  centres = _centres(scene, radii, rng)
  background = (rng.uniform(15, 60) + rng.uniform(-10, 10, size=3)).astype(np.float32)
  # Uniform noise of standard deviation ~6 (uniform draws are much cheaper than normal ones).
  canvas = rng.random((image_size, image_size, 3), dtype=np.float32) * 20 + (background - 10)
  for obj, (cx, cy), r in zip(scene.objects, centres, radii):
    # Only the object's bounding box is tested against its shape.
    x0, x1 = int(max(0, (cx - r) * scale - 1)), int(min(image_size, (cx + r) * scale + 2))
    y0, y1 = int(max(0, (cy - r) * scale - 1)), int(min(image_size, (cy + r) * scale + 2))
    xs = (np.arange(x0, x1) + 0.5) / scale - cx
    ys = (np.arange(y0, y1) + 0.5) / scale - cy
    mask = _shape_mask(obj.shape, xs[None, :], ys[:, None], r)
    colour = np.array(RGB[obj.colour], np.float32) + rng.uniform(-20, 20, size=3)
    box = canvas[y0:y1, x0:x1]
    box[mask] = colour + rng.random((int(mask.sum()), 3), dtype=np.float32) * 14 - 7
  return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
