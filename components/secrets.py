"""Secrets are referenced, never stored.

A config field that can carry a credential (a Redis connection string, a SQLAlchemy URL)
holds either a plain value *without* a credential, or a reference that is resolved only
where the connection is made:

* ``env:NAME``  - the value of environment variable ``NAME``;
* ``file:PATH`` - the content of file ``PATH`` (trailing newline stripped; a mounted
  Kubernetes/Docker secret).

Config validation rejects a literal credential (:func:`inline_secret`), so what run
records, the model store, Prefect flow-run parameters and bento arguments serialise is
the reference; :func:`redact` is applied by those fields' serialisers as a second line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from components.errors import ConfigError

ENV_PREFIX = "env:"
FILE_PREFIX = "file:"
MASK = "***"
# user:password@ in a URL; password=... in Redis' "host:port,password=..." strings
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)")
_KV_SECRET = re.compile(
    r"(?P<head>(?:^|[,;&?\s])(?:password|passwd|pwd|token|secret)=)(?P<pw>[^,;&\s]*)", re.I
)


def is_reference(value: str | None) -> bool:
    """True for ``env:NAME`` and ``file:PATH`` values."""
    return bool(value) and value.startswith((ENV_PREFIX, FILE_PREFIX))  # type: ignore[union-attr]


def inline_secret(value: str | None) -> bool:
    """True when a literal value embeds a credential (URL password or ``password=``)."""
    if not value or is_reference(value):
        return False
    return bool(_URL_PASSWORD.search(value) or _KV_SECRET.search(value))


def redact(value: str | None) -> str | None:
    """``value`` with any embedded credential replaced by ``***`` (references unchanged)."""
    if not value or is_reference(value):
        return value
    value = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, value)
    return _KV_SECRET.sub(lambda m: m.group("head") + MASK, value)


def resolve(value: str, *, what: str) -> str:
    """The usable value of ``value``: a reference is read now; a literal is returned as is.

    Raises :class:`ConfigError` (one line, naming ``what``) when the variable is unset or
    empty or the file cannot be read.
    """
    if value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :]
        found = os.environ.get(name)
        if not found:
            raise ConfigError(
                f"{what} refers to ${name}, which is not set in this environment",
                hint=f"export {name}=... (or point {what} at file:PATH)",
            )
        return found
    if value.startswith(FILE_PREFIX):
        path = Path(value[len(FILE_PREFIX) :]).expanduser()
        try:
            found = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"{what} refers to {path}, which cannot be read ({exc.strerror})"
            ) from None
        if not found:
            raise ConfigError(f"{what} refers to {path}, which is empty")
        return found
    return value


REFERENCE_HINT = "give it as env:NAME or file:PATH"


def check_no_inline_secret(
    value: str | None, *, what: str, instead: str = REFERENCE_HINT
) -> str | None:
    """Validator body: reject a literal credential with a one-line message naming ``what``."""
    if inline_secret(value):
        raise ValueError(
            f"{what} holds a literal password; {instead} "
            "(secrets are referenced, never stored in records, flow parameters or bentos)"
        )
    return value
