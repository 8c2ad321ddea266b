"""The README's and docs/' commands are the ones CI and users actually run.

Every `python -m experiments.NAME ...` command in README.md and docs/*.md (in
```bash / ```sh blocks and in inline code) must name an existing entry point,
existing config files, absl flags that entry point defines (with values its
parsers accept) and config fields its config declares. Links between the
pages must point at files and headings that exist. Nothing is trained: the
entry points and configs are imported once, in one subprocess, so that their
flags do not collide with each other or with other tests' flags.
"""

import ast
import functools
import json
import os
import re
import shlex
import subprocess
import sys
from typing import NamedTuple

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DOCS_DIR = os.path.join(_ROOT, 'docs')


def _read(*parts):
  with open(os.path.join(_ROOT, *parts), encoding='utf-8') as f:
    return f.read()


def _quickstart_lines():
  readme = _read('README.md')
  block = re.search(r'## Quickstart.*?```(?:bash|sh)?\n(.*?)```', readme,
                    re.S).group(1)
  return [line for line in block.splitlines() if line.strip()]


def test_quickstart_is_exactly_two_command_lines():
  lines = _quickstart_lines()
  assert len(lines) == 2
  assert lines[0].startswith('pip install -e . && python -m experiments.train')
  assert 'pytest' in lines[1]


def test_ci_runs_the_readme_test_command_verbatim():
  test_line = _quickstart_lines()[1]
  ci_lines = [line.strip() for line in _read('.ci', 'run').splitlines()]
  assert test_line in ci_lines


# --- Parsing the pages ------------------------------------------------------

_FENCE = re.compile(r'^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$', re.M | re.S)
_INLINE = re.compile(r'(`+)(.+?)\1', re.S)
_SHELL_LANGS = ('bash', 'sh', 'shell', 'console')
_OPERATORS = {';', '&&', '||', '|', '&', '(', ')', ';;'}
_KEYWORDS = {'do', 'done', 'then', 'else', 'fi', 'time', '!'}
_VARIABLE = re.compile(r'\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?')
_PLACEHOLDER = re.compile(r'^[A-Z][A-Z0-9_]*$')  # DIR, P, ROW, NAME, ...


def _pages():
  """README.md and every docs/*.md, as paths relative to the root."""
  names = sorted(n for n in os.listdir(_DOCS_DIR) if n.endswith('.md'))
  return ['README.md'] + [f'docs/{n}' for n in names]


def _prose(text):
  """The text outside fenced code blocks."""
  return _FENCE.sub('', text)


def _inline_code(text):
  """Inline code spans outside fenced blocks, line breaks as spaces."""
  return [' '.join(m.group(2).split()) for m in _INLINE.finditer(_prose(text))]


def _shell_blocks(text):
  return [m.group(2) for m in _FENCE.finditer(text)
          if m.group(1).lower() in _SHELL_LANGS]


def _logical_lines(block):
  """Lines with `\\` continuations joined and open quotes carried on."""
  pending = ''
  for line in block.split('\n'):
    if line.rstrip().endswith('\\'):
      pending += line.rstrip()[:-1] + ' '
      continue
    pending += line
    try:
      shlex.split(pending, comments=True)
    except ValueError:  # A quote left open: it goes on on the next line.
      pending += '\n'
      continue
    yield pending
    pending = ''
  if pending.strip():
    yield pending


def _tokens(line):
  lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  return list(lexer)


def _simple_commands(line, variables):
  """The simple commands of one logical shell line, `$VAR`s expanded."""
  line = _VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(0)), line)
  command = []
  for token in _tokens(line) + [';']:
    if token not in _OPERATORS:
      command.append(token)
      continue
    while command and command[0] in _KEYWORDS:
      command = command[1:]
    if command:
      yield command
    command = []


class Command(NamedTuple):
  page: str
  text: str  # The command as written (after joining lines).
  module: str  # experiments.NAME -> NAME
  args: tuple


def _experiment_commands(page, line, variables):
  for tokens in _simple_commands(line, variables):
    if all(re.match(r'[A-Za-z_]\w*=', t) for t in tokens):
      for t in tokens:  # VAR=value: kept for later `$VAR`.
        name, _, value = t.partition('=')
        variables[name] = value
      continue
    for t in tokens:  # e.g. --command="cd jaxdp && python -m experiments.X"
      if 'experiments.' in t and ' ' in t:
        inner = t.split('=', 1)[1] if t.startswith('-') else t
        yield from _experiment_commands(page, inner, variables)
    for i in range(len(tokens) - 2):
      if (re.fullmatch(r'(.*/)?python3?', tokens[i]) and tokens[i + 1] == '-m'
          and tokens[i + 2].startswith('experiments.')
          and not _PLACEHOLDER.match(tokens[i + 2][len('experiments.'):])):
        yield Command(page, ' '.join(line.split()),
                      tokens[i + 2][len('experiments.'):],
                      tuple(tokens[i + 3:]))


def _commands_of(page):
  text = _read(page)
  for block in _shell_blocks(text):
    variables = {}
    for line in _logical_lines(block):
      yield from _experiment_commands(page, line, variables)
  for code in _inline_code(text):
    if re.search(r'python3? -m experiments\.', code):
      yield from _experiment_commands(page, code, {})


@functools.lru_cache(maxsize=None)
def _all_commands():
  return tuple(c for page in _pages() for c in _commands_of(page))


def _options(command):
  """(name, value or None) of each --option, up to a bare `--`."""
  for arg in command.args:
    if arg == '--':
      return
    if arg.startswith('--'):
      name, eq, value = arg[2:].partition('=')
      yield name, (value if eq else None)


def _config_arg(command):
  values = [v for name, v in _options(command) if name == 'config']
  return values[-1] if values else None


def _unresolved(value):
  return value is None or '$' in value or _PLACEHOLDER.match(value)


# --- What the entry points and configs declare (one subprocess) -------------

_PROBE = r'''
import importlib, importlib.util, json, sys
from absl import flags
from ml_collections import config_dict

request = json.load(sys.stdin)
FLAGS = flags.FLAGS
out = {'modules': {}, 'common': [], 'values': [], 'configs': {}}
kept = {}
for name in request['modules']:
  module = 'experiments.' + name
  try:
    importlib.import_module(module)
  except Exception as e:  # Reported by the test, with the module's name.
    out['modules'][name] = {'error': f'{type(e).__name__}: {e}'}
    continue
  own = list(FLAGS.flags_by_module_dict().get(module, []))
  kept[name] = {f.name: f for f in own}
  out['modules'][name] = {'flags': {f.name: {'boolean': bool(f.boolean)}
                                    for f in own}}
  for f in own:  # So that the next entry point may define the same name.
    delattr(FLAGS, f.name)
common = {name: FLAGS[name] for name in FLAGS}  # absl's own, the library's.
out['common'] = sorted(common)
for name, flag_name, value in request['values']:
  flag = kept.get(name, {}).get(flag_name)
  if flag is None:
    flag = common.get(flag_name)
  try:
    if flag is not None:
      flag.parser.parse(value)
    out['values'].append(None)
  except Exception as e:
    out['values'].append(f'{type(e).__name__}: {e}')

def fields(config, prefix=''):
  for key, value in config.items():
    yield prefix + key
    if isinstance(value, config_dict.ConfigDict):
      yield from fields(value, prefix + key + '.')

for spec in request['configs']:
  path, _, arg = spec.partition(':')
  try:
    loader = importlib.util.spec_from_file_location('_readme_config', path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    out['configs'][spec] = {'fields': sorted(fields(config))}
  except Exception as e:
    out['configs'][spec] = {'error': f'{type(e).__name__}: {e}'}
print('\n' + json.dumps(out))
'''


@functools.lru_cache(maxsize=None)
def _probe():
  commands = _all_commands()
  modules = sorted({c.module for c in commands
                    if os.path.exists(_experiment_path(c.module))})
  configs = {'configs/base.py'}
  values = set()
  for c in commands:
    for name, value in _options(c):
      if name == 'config':
        if value and os.path.isfile(os.path.join(_ROOT,
                                                 value.partition(':')[0])):
          configs.add(value)
      elif not name.startswith('config.') and not _unresolved(value):
        values.add((c.module, name, value))
  request = {'modules': modules, 'configs': sorted(configs),
             'values': sorted(values)}
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  result = subprocess.run(
      [sys.executable, '-c', _PROBE], input=json.dumps(request), cwd=_ROOT,
      env=env, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  out['values'] = dict(zip(map(tuple, request['values']), out['values']))
  return out


def _experiment_path(module):
  return os.path.join(_ROOT, 'experiments', *module.split('.')) + '.py'


def _where(command):
  return f'{command.page}: `{command.text}`'


# --- The commands -----------------------------------------------------------


def test_pages_have_commands():
  """The parser finds the commands (a regex gone wrong would check none)."""
  pages = {c.page for c in _all_commands()}
  assert 'README.md' in pages
  assert len(pages) >= 8, pages
  modules = {c.module for c in _all_commands()}
  assert {'train', 'account', 'reproduce', 'audit', 'tune'} <= modules


def test_every_command_runs_an_existing_entry_point():
  missing = [f'{_where(c)}: no experiments/{c.module}.py'
             for c in _all_commands()
             if not os.path.isfile(_experiment_path(c.module))]
  assert not missing, '\n'.join(missing)


def test_every_config_file_exists():
  bad = []
  for c in _all_commands():
    for name, value in _options(c):
      if name == 'config':
        path = (value or '').partition(':')[0]
        if not os.path.isfile(os.path.join(_ROOT, path)):
          bad.append(f'{_where(c)}: --config={value}: no such file')
  assert not bad, '\n'.join(bad)


def test_every_flag_is_defined_by_its_entry_point():
  probe = _probe()
  bad = []
  for c in _all_commands():
    info = probe['modules'].get(c.module)
    if info is None:
      continue  # Reported by the entry-point test.
    if 'error' in info:
      bad.append(f'{_where(c)}: experiments.{c.module} does not import: '
                 f'{info["error"]}')
      continue
    own = info['flags']
    known = set(own) | set(probe['common'])
    for name, value in _options(c):
      if name.startswith('config.'):
        if 'config' not in own:
          bad.append(f'{_where(c)}: --{name}: experiments.{c.module} takes '
                     'no --config')
        continue
      negated = name.startswith('no') and own.get(name[2:], {}).get('boolean')
      if name not in known and not negated:
        bad.append(f'{_where(c)}: --{name} is not a flag of '
                   f'experiments.{c.module} (it has: {", ".join(sorted(own))})')
        continue
      error = probe['values'].get((c.module, name, value))
      if error:
        bad.append(f'{_where(c)}: --{name}={value}: {error}')
  assert not bad, '\n'.join(bad)


def test_every_config_override_names_a_field_of_its_config():
  probe = _probe()
  bad = []
  for c in _all_commands():
    overrides = [n[len('config.'):] for n, _ in _options(c)
                 if n.startswith('config.')]
    if not overrides:
      continue
    spec = _config_arg(c)
    if spec is None:
      bad.append(f'{_where(c)}: --config. overrides without --config=')
      continue
    config = probe['configs'].get(spec)
    if config is None:
      continue  # A missing file: reported by the config-file test.
    if 'error' in config:
      bad.append(f'{_where(c)}: {spec} does not load: {config["error"]}')
      continue
    for field in overrides:
      if field not in config['fields']:
        bad.append(f'{_where(c)}: --config.{field}: {spec} has no such field')
  assert not bad, '\n'.join(bad)


_FIELD_IN_PROSE = re.compile(
    r'^(?:--)?(?:config\.)?([a-z_]+)\.([a-z_0-9]+)(?:=\S*)?$')
_FILE_SUFFIXES = {'json', 'jsonl', 'md', 'py', 'npz', 'png', 'txt', 'gguf',
                  'safetensors', 'csv', 'lock'}


def test_config_fields_named_in_prose_exist():
  """`dp.clip_norm`, `--config.perf.microbatch_size=K`: fields of base.py."""
  fields = set(_probe()['configs']['configs/base.py']['fields'])
  sections = {f.split('.')[0] for f in fields if '.' in f}
  bad = []
  for page in _pages():
    for code in _inline_code(_read(page)):
      if re.search(r'python3? -m ', code):
        continue  # A command: checked against its own config above.
      for word in code.split():
        m = _FIELD_IN_PROSE.match(word)
        if (m and m.group(1) in sections
            and m.group(2) not in _FILE_SUFFIXES):
          field = f'{m.group(1)}.{m.group(2)}'
          if field not in fields:
            bad.append(f'{page}: `{code}`: configs/base.py has no {field}')
  assert not bad, '\n'.join(bad)


# --- Paths, modules and links -----------------------------------------------

_REPO_PATH = re.compile(
    r'(?<![\w/.<>-])((?:jaxdp|tests|configs|experiments|docs)/[\w./-]*)')
_DOTTED = re.compile(r'(?<![\w.])(jaxdp(?:\.\w+)+)')


def test_repository_paths_in_the_pages_exist():
  """`jaxdp/accounting/budget.py`, `tests/test_resume.py`: not stale."""
  bad = []
  for page in _pages():
    text = _read(page)
    spans = _inline_code(text) + [b for b in _shell_blocks(text)]
    for span in spans:
      for path in _REPO_PATH.findall(span):
        path = path.rstrip('.,;:')
        if not os.path.exists(os.path.join(_ROOT, path)):
          bad.append(f'{page}: {path} does not exist')
      for name in re.findall(r'(?<![\w/])experiments\.(\w+)', span):
        if not _PLACEHOLDER.match(name) and not os.path.isfile(
            _experiment_path(name)):
          bad.append(f'{page}: experiments.{name} does not exist')
  assert not bad, '\n'.join(bad)


def _top_level_names(path):
  tree = ast.parse(open(path, encoding='utf-8').read())
  names = set()
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      names.add(node.name)
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      names.update(t.id for t in targets if isinstance(t, ast.Name))
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      names.update((a.asname or a.name).split('.')[0] for a in node.names)
  return names


def _module_file(parts):
  base = os.path.join(_ROOT, *parts)
  for path in (base + '.py', os.path.join(base, '__init__.py')):
    if os.path.isfile(path):
      return path
  return None


def test_dotted_jaxdp_names_in_the_pages_exist():
  """`jaxdp.train.step.make_train_step`: the module and the name."""
  bad = []
  for page in _pages():
    for code in _inline_code(_read(page)):
      for dotted in _DOTTED.findall(code):
        parts = dotted.split('.')
        k = max(i for i in range(1, len(parts) + 1)
                if _module_file(parts[:i]))
        rest = parts[k:]
        if rest and rest[0] not in _top_level_names(_module_file(parts[:k])):
          bad.append(f'{page}: {dotted}: {".".join(parts[:k])} has no '
                     f'{rest[0]}')
  assert not bad, '\n'.join(bad)


_LINK = re.compile(r'\[([^\]]*)\]\(([^)\s]+)\)')


def _slug(heading):
  """GitHub's anchor for a heading."""
  text = re.sub(r'[`*_]|\[([^\]]*)\]\([^)]*\)', r'\1', heading).strip().lower()
  return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def _anchors(page):
  anchors, seen = set(), {}
  for m in re.finditer(r'^#{1,6}\s+(.*?)\s*#*\s*$', _prose(_read(page)), re.M):
    slug = _slug(m.group(1))
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    anchors.add(slug if n == 0 else f'{slug}-{n}')
  return anchors


def test_relative_links_point_at_existing_files_and_headings():
  bad = []
  for page in _pages():
    prose = _INLINE.sub('', _prose(_read(page)))
    for text, target in _LINK.findall(prose):
      if re.match(r'[a-z][a-z0-9+.-]*:', target):
        continue  # https:, mailto:
      path, _, anchor = target.partition('#')
      resolved = (os.path.normpath(os.path.join(os.path.dirname(page), path))
                  if path else page)
      if not os.path.exists(os.path.join(_ROOT, resolved)):
        bad.append(f'{page}: [{text}]({target}): no file {resolved}')
      elif anchor and resolved.endswith('.md'):
        if anchor not in _anchors(resolved):
          bad.append(f'{page}: [{text}]({target}): {resolved} has no '
                     f'heading #{anchor}')
  assert not bad, '\n'.join(bad)


def test_every_docs_page_is_linked_from_the_readme_and_links_back():
  readme_links = {t.partition('#')[0] for _, t in _LINK.findall(
      _prose(_read('README.md')))}
  bad = []
  for page in _pages()[1:]:
    if page not in readme_links:
      bad.append(f'{page} is not linked from README.md')
    text = _read(page)
    if not text.startswith('# '):
      bad.append(f'{page} does not start with a "# " title')
    if '(../README.md' not in text:
      bad.append(f'{page} has no link back to the README')
  assert not bad, '\n'.join(bad)


def test_readme_stays_short():
  assert len(_read('README.md').encode('utf-8')) <= 25_000
