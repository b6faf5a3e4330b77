"""Data sources by name (`config.data.source`); each returns a split's `Records`."""

from jaxret import errors

SOURCES = ('builtin',)


def load_split(data_config, split):
  if data_config.source == 'builtin':
    from jaxret.data.builtin import dataset  # pylint: disable=import-outside-toplevel
    return dataset.load_split(data_config, split)
  raise errors.UserError(f'unknown data.source {data_config.source!r}; known: {", ".join(SOURCES)}')
