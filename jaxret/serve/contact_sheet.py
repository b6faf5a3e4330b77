"""A contact sheet: the query's hits side by side, each labelled with its rank and score;
for a video gallery, one frame strip per hit."""

import numpy as np
from PIL import Image
from PIL import ImageDraw

THUMB = 128
LABEL = 16
FRAME_THUMB = 64  # Each frame of a clip's strip.


def contact_sheet(images, labels, columns=5):
  """uint8 (N, H, W, 3) images and N short labels -> a PIL image grid; (N, T, H, W, 3)
  clips -> one row per clip: its label, then its T frames left to right."""
  images = np.asarray(images, np.uint8)
  if images.ndim == 5:
    return _frame_strips(images, labels)
  rows = -(-len(images) // columns)
  sheet = Image.new('RGB', (columns * THUMB, rows * (THUMB + LABEL)), 'white')
  draw = ImageDraw.Draw(sheet)
  for i, (image, label) in enumerate(zip(images, labels)):
    x, y = (i % columns) * THUMB, (i // columns) * (THUMB + LABEL)
    thumb = Image.fromarray(np.asarray(image, np.uint8)).resize((THUMB, THUMB), Image.NEAREST)
    sheet.paste(thumb, (x, y))
    draw.text((x + 3, y + THUMB + 2), label, fill='black')
  return sheet


def _frame_strips(clips, labels):
  count, frames = clips.shape[:2]
  label_width = 8 * max(len(label) for label in labels) + 6
  sheet = Image.new('RGB', (label_width + frames * FRAME_THUMB, count * (FRAME_THUMB + 4)),
                    'white')
  draw = ImageDraw.Draw(sheet)
  for i, (clip, label) in enumerate(zip(clips, labels)):
    y = i * (FRAME_THUMB + 4)
    draw.text((3, y + FRAME_THUMB // 2 - 6), label, fill='black')
    for t, frame in enumerate(clip):
      thumb = Image.fromarray(frame).resize((FRAME_THUMB, FRAME_THUMB), Image.NEAREST)
      sheet.paste(thumb, (label_width + t * FRAME_THUMB, y))
  return sheet
