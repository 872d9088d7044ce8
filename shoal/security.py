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

Encryption: with ``tls://`` addresses and TLS files (a CA, this process's certificate and
key; :meth:`Security.temporary` makes a throwaway set), every connection is TLS, and a
server with a CA accepts only clients with a certificate from it (mutual TLS).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import ssl
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
    """The credentials of one process: the cluster's shared secret (``token``) and, for
    ``tls://`` addresses, a CA file and this process's certificate and key.

    ``Security()`` takes everything from the configuration (see the module doc);
    :meth:`insecure` means no authentication at all. With a CA, TLS servers require a
    certificate from their clients too (mutual TLS) unless ``mutual_tls=False``.
    """

    token: str | None = None
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    mutual_tls: bool = True

    @classmethod
    def temporary(cls, tls: bool = True) -> Security:
        """A fresh random secret and (with ``tls``) a throwaway CA and certificate,
        valid for this host, in files only this user can read; what a LocalCluster uses."""
        token = secrets.token_urlsafe(32)
        if not tls:
            return cls(token=token)
        ca, cert, key = _temporary_certificates()
        return cls(token=token, tls_ca_file=ca, tls_cert=cert, tls_key=key)

    @classmethod
    def insecure(cls) -> Security:
        """No authentication: anyone who can reach the ports may connect."""
        return cls(token=None)

    @classmethod
    def from_config(cls) -> Security:
        """The secret and TLS files set in the environment or configuration, if any."""
        token = config.get("auth-token")
        if isinstance(token, str):
            token = token.strip()  # as in a token file: a trailing newline is not part of it
        path = config.get("auth-token-file")
        if not token and path:
            token = read_token_file(path)
        return cls(
            token=str(token) if token else None,
            tls_ca_file=config.get("tls.ca-file") or None,
            tls_cert=config.get("tls.cert") or None,
            tls_key=config.get("tls.key") or None,
        )

    @property
    def secret(self) -> bytes | None:
        """The secret as the handshake takes it (None: no authentication)."""
        return self.token.encode() if self.token else None

    def server_context(self) -> ssl.SSLContext | None:
        """The TLS context for listening (None without a certificate)."""
        if not self.tls_cert:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.tls_cert, self.tls_key)
        if self.tls_ca_file:
            ctx.load_verify_locations(self.tls_ca_file)
            if self.mutual_tls:
                ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext | None:
        """The TLS context for connecting (None without a CA): the server's certificate
        must come from the CA; host names are not checked, as in distributed."""
        if not self.tls_ca_file:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False
        ctx.load_verify_locations(self.tls_ca_file)
        if self.tls_cert:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        return ctx

    def environment(self) -> dict[str, str]:
        """Environment variables that give a child process the same credentials."""
        env = {"SHOAL_AUTH_TOKEN": self.token} if self.token else {}
        for var, value in (
            ("SHOAL_TLS__CA_FILE", self.tls_ca_file),
            ("SHOAL_TLS__CERT", self.tls_cert),
            ("SHOAL_TLS__KEY", self.tls_key),
        ):
            if value:
                env[var] = value
        return env

    def __repr__(self) -> str:  # never print the secret
        tls = f", tls_cert={self.tls_cert!r}" if self.tls_cert else ""
        return f"Security(token={'<hidden>' if self.token else None}{tls})"


def _temporary_certificates() -> tuple[str, str, str]:
    """Write a new CA and a certificate it signs (for this host) to a private folder."""
    import datetime
    import ipaddress
    import socket
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    until = now + datetime.timedelta(days=365)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("shoal temporary CA"))
        .issuer_name(name("shoal temporary CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(host))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(until)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(host),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder = Path(tempfile.mkdtemp(prefix="shoal-tls-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for p in paths:
        os.chmod(p, 0o600)
    return str(paths[0]), str(paths[1]), str(paths[2])
