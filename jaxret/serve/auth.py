"""Write tokens: who may change the gallery (`POST /items`, `DELETE /items`).

`--mode=serve` reads the token from `--write_token_file=PATH` or, without that
flag, from the environment variable `JAXRET_WRITE_TOKEN`. Without either,
writes are refused with a message that says how to enable them. A request
proves it holds the token with `Authorization: Bearer <token>`; the comparison
is constant-time (`hmac.compare_digest`), so its duration does not leak how
much of a guess was right.
"""

import hmac
import os

from jaxret import errors

ENV_VAR = 'JAXRET_WRITE_TOKEN'
MIN_CHARS = 16
HOW_TO_MAKE = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
ENABLE = (f'start the server with {ENV_VAR}=<token> in its environment or with '
          f'--write_token_file=PATH, and send "Authorization: Bearer <token>"')


class Refused(Exception):
  """A write without a valid token: `status` 401 (no credentials) or 403 (wrong or disabled)."""

  def __init__(self, status, message):
    super().__init__(message)
    self.status = status


def _checked(token, source):
  token = token.strip()
  if len(token) < MIN_CHARS or any(c.isspace() for c in token):
    raise errors.UserError(f'the write token from {source} must be at least {MIN_CHARS} '
                           f'characters without spaces; make one with {HOW_TO_MAKE}')
  return token


def load_token(token_file=None, environ=os.environ):
  """The write token, or None (writes disabled): from `token_file` if given, else the env."""
  if token_file:
    try:
      with open(token_file, encoding='utf-8') as f:
        return _checked(f.read(), token_file)
    except (OSError, UnicodeDecodeError) as e:
      raise errors.UserError(f'cannot read the write token file {token_file} '
                             f'({type(e).__name__}: {e})') from None
  if environ.get(ENV_VAR):
    return _checked(environ[ENV_VAR], f'${ENV_VAR}')
  return None


def check(write_token, authorization):
  """Refuses a write unless `authorization` (the header, or None) is `Bearer <write_token>`."""
  if write_token is None:
    raise Refused(403, f'writes are disabled on this server: {ENABLE}')
  scheme, _, credentials = (authorization or '').partition(' ')
  if scheme.lower() != 'bearer' or not credentials.strip():
    raise Refused(401, 'changing the gallery needs "Authorization: Bearer <token>" (the '
                  'server\'s write token)')
  if not hmac.compare_digest(credentials.strip().encode('utf-8'), write_token.encode('utf-8')):
    raise Refused(403, 'the write token is wrong')
