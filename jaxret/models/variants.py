"""Transformer sizes by name, as in ViT/big_vision: 'B' or 'B/16' (with patch size)."""

WIDTH = {'mu': 32, 'nano': 128, 'Ti': 192, 'S': 384, 'M': 512, 'B': 768, 'L': 1024, 'H': 1280}
DEPTH = {'mu': 1, 'nano': 4, 'Ti': 12, 'S': 12, 'M': 12, 'B': 12, 'L': 24, 'H': 32}
MLP_DIM = {'mu': 128, 'nano': 512, 'Ti': 768, 'S': 1536, 'M': 2048, 'B': 3072, 'L': 4096, 'H': 5120}
NUM_HEADS = {'mu': 2, 'nano': 4, 'Ti': 3, 'S': 6, 'M': 8, 'B': 12, 'L': 16, 'H': 16}
OVERRIDES = ('width', 'depth', 'mlp_dim', 'num_heads')


def decode(variant, **overrides):
  """'S/16' -> {'width', 'depth', 'mlp_dim', 'num_heads', 'patch_size'}.

  `overrides` (e.g. depth=3) replace the variant's value when not None; other
  names are refused (a misspelt size must not be ignored).
  """
  name, _, patch = variant.partition('/')
  if name not in WIDTH:
    raise ValueError(f'unknown model variant {variant!r}; known sizes: {", ".join(WIDTH)}')
  unknown = sorted(set(overrides) - set(OVERRIDES))
  if unknown:
    raise ValueError(f'unknown size settings {unknown} for variant {variant!r}; '
                     f'known: {", ".join(OVERRIDES)}')
  sizes = {'width': WIDTH[name], 'depth': DEPTH[name], 'mlp_dim': MLP_DIM[name],
           'num_heads': NUM_HEADS[name]}
  if patch:
    sizes['patch_size'] = int(patch)
  sizes.update({k: v for k, v in overrides.items() if v is not None})
  return sizes
