"""Who may talk to a cluster: the shared secret checked in every handshake.

Every connection starts with a handshake (:mod:`shoal.protocol.handshake`); when the
cluster has a secret, both ends prove they know it with HMAC proofs over fresh nonces,
and a peer that can't is refused before any message is read. The secret never crosses
the wire.

Where the secret comes from, first match wins: ``Security(token=...)`` passed to a
Scheduler, Worker, Client or LocalCluster; the ``SHOAL_AUTH_TOKEN`` environment variable
(``auth-token`` in the configuration); the file named by ``SHOAL_AUTH_TOKEN_FILE``
(``auth-token-file``, or ``--auth-token-file`` on the command line). A LocalCluster
makes a fresh secret of its own unless given one, so other users of the machine can't
use it.

Not protected (yet): traffic is not encrypted (TLS is not built), so on an untrusted
network an observer sees task data; the secret only decides who may connect.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from shoal import config

__all__ = ["Security", "known_security", "read_token_file", "remember_security"]

#: Secrets of clusters this process started (LocalCluster), by scheduler address, so
#: that ``Client(cluster.scheduler_address)`` in the same process finds them.
_local: dict[str, Security] = {}


def remember_security(address: str, security: Security | None) -> None:
    """Record (or, with None, forget) the credentials for a scheduler this process runs."""
    if security is None:
        _local.pop(address, None)
    else:
        _local[address] = security


def known_security(address: str) -> Security | None:
    """The credentials recorded for ``address`` by :func:`remember_security`, if any."""
    return _local.get(address)


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The secret stored in ``path`` (surrounding whitespace removed); a clear error if
    the file is missing, empty, or readable by other users."""
    p = Path(path)
    try:
        text = p.read_text().strip()
    except OSError as e:
        raise ValueError(f"cannot read the authentication token file {p}: {e}") from None
    if not text:
        raise ValueError(f"the authentication token file {p} is empty")
    if os.name == "posix" and p.stat().st_mode & 0o077:
        raise ValueError(
            f"the authentication token file {p} is readable by other users: run `chmod 600 {p}`"
        )
    return text


@dataclass(frozen=True)
class Security:
    """The credentials of one process: for now the cluster's shared secret (``token``).

    ``Security()`` takes the secret from the configuration (see the module doc);
    ``Security(token=None)`` after :meth:`insecure` means no authentication at all.
    """

    token: str | None = None

    @classmethod
    def temporary(cls) -> Security:
        """A fresh random secret (what a LocalCluster uses by default)."""
        return cls(token=secrets.token_urlsafe(32))

    @classmethod
    def insecure(cls) -> Security:
        """No authentication: anyone who can reach the ports may connect."""
        return cls(token=None)

    @classmethod
    def from_config(cls) -> Security:
        """The secret set in the environment or configuration, if any."""
        token = config.get("auth-token")
        if token:
            return cls(token=str(token))
        path = config.get("auth-token-file")
        if path:
            return cls(token=read_token_file(path))
        return cls(token=None)

    @property
    def secret(self) -> bytes | None:
        """The secret as the handshake takes it (None: no authentication)."""
        return self.token.encode() if self.token else None

    def environment(self) -> dict[str, str]:
        """Environment variables that give a child process the same secret."""
        return {"SHOAL_AUTH_TOKEN": self.token} if self.token else {}

    def __repr__(self) -> str:  # never print the secret
        return f"Security(token={'<hidden>' if self.token else None})"
