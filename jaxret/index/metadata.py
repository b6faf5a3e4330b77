"""Item metadata as columns aligned with the index's rows, and the filters over them.

A field holds strings, numbers or dates (a string `YYYY-MM-DD`, or a
`datetime.date`); its type is fixed by the first value it gets. Strings are
dictionary-encoded (int32 codes), numbers float64, dates float64 days since
1970-01-01; a missing value (code -1, NaN) passes no condition.

A filter is a JSON object, its fields combined with AND:

  {"tag": "x"}                      equality
  {"tag": {"in": ["x", "y"]}}       set membership
  {"year": {"gte": 2000, "lt": 2010}}   a range (numbers and dates): gte, gt, lte, lt

`mask(filter)` is the exact set of rows that pass, as a boolean array.
"""

import datetime
import re

import numpy as np

from jaxret import errors

TYPES = ('string', 'number', 'date')
RANGE_OPS = {'gte': np.greater_equal, 'gt': np.greater, 'lte': np.less_equal, 'lt': np.less}
OPS = ('in',) + tuple(RANGE_OPS)
MAX_FIELD_CHARS = 64
MAX_STRING_CHARS = 1000
_DATE = re.compile(r'^\d{4}-\d{2}-\d{2}$')
_EPOCH = datetime.date(1970, 1, 1)


def _type_of(value):
  if isinstance(value, datetime.date) or (isinstance(value, str) and _DATE.match(value)):
    return 'date'
  if isinstance(value, str):
    return 'string'
  if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
    return 'number'
  raise errors.UserError(f'metadata value {value!r} must be a string, a number or a date '
                         '(YYYY-MM-DD)')


def _day(value, field):
  if isinstance(value, datetime.datetime):
    value = value.date()
  if isinstance(value, datetime.date):
    return float((value - _EPOCH).days)
  if isinstance(value, str) and _DATE.match(value):
    try:
      return float((datetime.date.fromisoformat(value) - _EPOCH).days)
    except ValueError:
      pass
  raise errors.UserError(f'field {field!r} holds dates: {value!r} is not a date (YYYY-MM-DD)')


def _number(value, field):
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise errors.UserError(f'field {field!r} holds numbers: {value!r} is not a number')
  if not np.isfinite(value):
    raise errors.UserError(f'field {field!r}: {value!r} is not a finite number')
  return float(value)


class Table:
  """Metadata columns, one row per index row."""

  def __init__(self, num_rows, fields=None):
    self.num_rows = num_rows
    self.types = {}  # field -> 'string' | 'number' | 'date'
    self.columns = {}  # field -> int32 codes (strings) or float64 values
    self.vocab = {}  # string field -> list of strings; codes index it
    self._code = {}  # string field -> {string: code}
    for name, (kind, column, vocab) in (fields or {}).items():
      self.types[name], self.columns[name] = kind, column
      if kind == 'string':
        self.vocab[name] = list(vocab)
        self._code[name] = {text: code for code, text in enumerate(self.vocab[name])}

  # Values.

  def check(self, metadata, where='metadata', new_types=None):
    """Validates one item's metadata dict without changing anything.

    `new_types` (a dict) collects the types of fields not yet in the table, so that the
    items of one request are checked against each other too.
    """
    new_types = {} if new_types is None else new_types
    if not isinstance(metadata, dict):
      raise errors.UserError(f'{where} must be an object of field: value')
    for name, value in metadata.items():
      if not isinstance(name, str) or not name or len(name) > MAX_FIELD_CHARS:
        raise errors.UserError(f'{where}: field names must be strings of 1 to '
                               f'{MAX_FIELD_CHARS} characters, not {name!r}')
      kind = self.types.get(name) or new_types.setdefault(name, _type_of(value))
      if kind == 'string':
        if not isinstance(value, str) or len(value) > MAX_STRING_CHARS:
          raise errors.UserError(f'{where}: field {name!r} holds strings of at most '
                                 f'{MAX_STRING_CHARS} characters, not {value!r}')
      elif kind == 'number':
        _number(value, name)
      else:
        _day(value, name)

  def _encode(self, name, value):
    kind = self.types[name]
    if kind == 'number':
      return _number(value, name)
    if kind == 'date':
      return _day(value, name)
    code = self._code[name].get(value)
    if code is None:
      code = self._code[name][value] = len(self.vocab[name])
      self.vocab[name].append(value)
    return code

  def _add_field(self, name, kind):
    self.types[name] = kind
    if kind == 'string':
      self.columns[name] = np.full(self.num_rows, -1, np.int32)
      self.vocab[name], self._code[name] = [], {}
    else:
      self.columns[name] = np.full(self.num_rows, np.nan)

  def grow(self, num_rows):
    """Appends empty rows up to `num_rows`."""
    extra = num_rows - self.num_rows
    for name, column in self.columns.items():
      fill = -1 if self.types[name] == 'string' else np.nan
      self.columns[name] = np.concatenate([column, np.full(extra, fill, column.dtype)])
    self.num_rows = num_rows

  def set_row(self, row, metadata):
    """Replaces row `row`'s metadata (checked with `check` first)."""
    for name, value in metadata.items():
      if name not in self.types:
        self._add_field(name, _type_of(value))
    for name, column in self.columns.items():
      if name in metadata:
        column[row] = self._encode(name, metadata[name])
      else:
        column[row] = -1 if self.types[name] == 'string' else np.nan

  def move(self, source, target):
    for column in self.columns.values():
      column[target] = column[source]

  def truncate(self, num_rows):
    self.columns = {name: column[:num_rows] for name, column in self.columns.items()}
    self.num_rows = num_rows

  def row(self, row):
    """Row `row`'s metadata as a JSON-ready dict (missing fields left out)."""
    found = {}
    for name, column in self.columns.items():
      value = column[row]
      if self.types[name] == 'string':
        if value >= 0:
          found[name] = self.vocab[name][value]
      elif not np.isnan(value):
        if self.types[name] == 'date':
          found[name] = (_EPOCH + datetime.timedelta(days=int(value))).isoformat()
        else:
          found[name] = int(value) if value == int(value) else float(value)
    return found

  # Filters.

  def _condition_values(self, name, values):
    kind = self.types[name]
    if kind == 'string':
      for value in values:
        if not isinstance(value, str):
          raise errors.UserError(f'filter on {name!r}: {value!r} is not a string (the field '
                                 'holds strings)')
      return [self._code[name].get(value, -2) for value in values]  # -2 matches no row.
    return [_number(v, name) if kind == 'number' else _day(v, name) for v in values]

  def mask(self, expression):
    """The rows that pass `expression` (see the module docstring), as a bool array."""
    if not isinstance(expression, dict):
      raise errors.UserError('filter must be an object of field: condition, e.g. '
                             '{"tag": "x", "year": {"gte": 2000}}')
    passed = np.ones(self.num_rows, bool)
    for name, condition in expression.items():
      if name not in self.types:
        known = ', '.join(sorted(self.types)) or 'none'
        raise errors.UserError(f'unknown filter field {name!r}; the fields are: {known}')
      column = self.columns[name]
      if not isinstance(condition, dict):
        if isinstance(condition, (list, type(None), bool)):
          raise errors.UserError(f'malformed filter on {name!r}: {condition!r}; use a value, '
                                 '{"in": [...]} or a range {"gte": ..., "lt": ...}')
        (code,) = self._condition_values(name, [condition])
        passed &= column == code
        continue
      unknown = sorted(set(condition) - set(OPS))
      if unknown or not condition:
        raise errors.UserError(f'malformed filter on {name!r}: operators {unknown or "none"}; '
                               f'known: {", ".join(OPS)}')
      if 'in' in condition:
        if len(condition) != 1:
          raise errors.UserError(f'malformed filter on {name!r}: "in" cannot be combined with '
                                 'a range')
        values = condition['in']
        if not isinstance(values, list) or not values:
          raise errors.UserError(f'malformed filter on {name!r}: "in" takes a non-empty list')
        wanted = self._condition_values(name, values)
        if self.types[name] == 'string':  # A table over the codes; -1 (missing) at index 0.
          table = np.zeros(len(self.vocab[name]) + 1, bool)
          table[[code + 1 for code in wanted if code >= 0]] = True
          passed &= table[column + 1]
        else:
          passed &= np.isin(column, wanted)
        continue
      if self.types[name] == 'string':
        raise errors.UserError(f'malformed filter on {name!r}: ranges apply to numbers and '
                               'dates, and the field holds strings')
      for op, bound in condition.items():
        (bound,) = self._condition_values(name, [bound])
        passed &= RANGE_OPS[op](column, bound)  # NaN (missing) compares False.
    return passed

  # Saving.

  def arrays(self):
    """The table as named arrays for `np.savez` (`from_arrays` reads them back)."""
    arrays = {'__num_rows__': np.asarray(self.num_rows)}
    for name, kind in self.types.items():
      arrays[f'{kind}:{name}'] = self.columns[name]
      if kind == 'string':
        arrays[f'vocab:{name}'] = np.asarray(self.vocab[name], np.str_)
    return arrays


def from_arrays(arrays):
  fields = {}
  for key in arrays:
    kind, _, name = key.partition(':')
    if kind in TYPES:
      vocab = arrays[f'vocab:{name}'].tolist() if kind == 'string' else None
      fields[name] = (kind, np.array(arrays[key]), vocab)
  return Table(int(arrays['__num_rows__']), fields)
