"""A contact sheet: the query's hits side by side, each labelled with its rank and score."""

import numpy as np
from PIL import Image
from PIL import ImageDraw

THUMB = 128
LABEL = 16


def contact_sheet(images, labels, columns=5):
  """uint8 (N, H, W, 3) images and N short labels -> a PIL image grid."""
  rows = -(-len(images) // columns)
  sheet = Image.new('RGB', (columns * THUMB, rows * (THUMB + LABEL)), 'white')
  draw = ImageDraw.Draw(sheet)
  for i, (image, label) in enumerate(zip(images, labels)):
    x, y = (i % columns) * THUMB, (i // columns) * (THUMB + LABEL)
    thumb = Image.fromarray(np.asarray(image, np.uint8)).resize((THUMB, THUMB), Image.NEAREST)
    sheet.paste(thumb, (x, y))
    draw.text((x + 3, y + THUMB + 2), label, fill='black')
  return sheet
