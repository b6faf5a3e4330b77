"""The package's layers (`jaxret.LAYERS`): every import points down, and there are no cycles."""

import ast
import pathlib

import jaxret

PACKAGE = pathlib.Path(jaxret.__file__).parent
LAYER_OF = {name: level for level, names in enumerate(jaxret.LAYERS) for name in names}

# Imports inside functions, each for an optional heavy dependency, with the reason.
FUNCTION_IMPORTS = {
    ('data/tfds_source.py', 'tensorflow_datasets'): 'takes seconds; only the tfds source needs it',
    ('evaluate/fast_slow.py', 'matplotlib'): 'takes a second; only the report plot needs it',
}


def _modules():
  for path in sorted(PACKAGE.rglob('*.py')):
    yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text())


def _imports(tree):
  """(imported module, line, inside a function) for every import in `tree`."""
  inner = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
      inner.update(id(n) for n in ast.walk(node) if n is not node)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      # `from jaxret.x import y` may name a module y: count it as jaxret.x.y.
      names = [f'{node.module}.{alias.name}' for alias in node.names]
    else:
      continue
    for name in names:
      yield name, node.lineno, id(node) in inner


def _layer(relative):
  top = relative.split('/')[0].removesuffix('.py')
  return None if top == '__init__' else top


def _jaxret_module(name):
  """The file (relative to the package) that the import of `name` loads, or None."""
  if not name.startswith('jaxret.'):
    return None
  parts = name.split('.')[1:]
  while parts:
    for candidate in ('/'.join(parts) + '.py', '/'.join(parts) + '/__init__.py'):
      if (PACKAGE / candidate).exists():
        return candidate
    parts = parts[:-1]
  return None


def test_every_top_level_name_has_a_layer():
  tops = {_layer(p.relative_to(PACKAGE).as_posix()) for p in PACKAGE.rglob('*.py')}
  assert tops - {None} == set(LAYER_OF)


def test_imports_point_down_the_layers():
  upward = []
  for relative, tree in _modules():
    layer = _layer(relative)
    for name, line, _ in _imports(tree):
      target = _jaxret_module(name)
      if layer is None or target is None:
        continue
      if LAYER_OF[_layer(target)] > LAYER_OF[layer]:
        upward.append(f'{relative}:{line} imports {name} ({_layer(target)} is above {layer})')
  assert not upward, '\n'.join(upward)


def test_imports_inside_functions_are_only_optional_heavy_dependencies():
  found = {(relative, name.split('.')[0])
           for relative, tree in _modules() for name, _, inner in _imports(tree) if inner}
  assert found == set(FUNCTION_IMPORTS)


def test_no_import_cycles_between_modules():
  graph = {}
  for relative, tree in _modules():
    graph[relative] = {t for name, _, _ in _imports(tree)
                       if (t := _jaxret_module(name)) and t != relative}
  state, cycles = {}, []

  def visit(node, path):
    state[node] = 'open'
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 'open':
        cycles.append(' -> '.join(path[path.index(nxt):] + [nxt]))
      elif nxt not in state:
        visit(nxt, path + [nxt])
    state[node] = 'done'

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])
  assert not cycles, '\n'.join(cycles)


def test_the_layer_test_catches_an_upward_import():
  tree = ast.parse('def f():\n  from jaxret.serve import server\n')
  (name, _, inner), = _imports(tree)
  assert inner and LAYER_OF[_layer(_jaxret_module(name))] > LAYER_OF['losses']
