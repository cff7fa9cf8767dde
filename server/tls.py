"""TLS for the gRPC server and its clients, and who a client certificate names.

- `server_credentials`: the server's certificate and key; with a client CA, mutual TLS — a
  client must present a certificate that CA signed, or the handshake fails.
- `channel_credentials`: what `LetheClient`, the CLI and the health probe present.
- `peer_identity`: the verified client certificate's subject common name (else its first
  subject alternative name), which the Admin service records as the actor in the audit log.
Does not issue, rotate or reload certificates (restart to pick up new files), and imports
nothing from the server but grpc, so the health probe stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    cert: Path | None = None  # PEM certificate (chain) this side presents
    key: Path | None = None  # its PEM private key
    ca: Path | None = None  # server: CA of client certificates (mTLS on); client: CA to trust


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    if files.cert is None or files.key is None:
        raise ValueError("a TLS server needs both a certificate and a key")
    pair = [(files.key.read_bytes(), files.cert.read_bytes())]
    return grpc.ssl_server_credentials(pair, root_certificates=_read(files.ca),
                                       require_client_auth=files.ca is not None)


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Trust `ca` (else the system's roots); present `cert`/`key` when given (mutual TLS)."""
    if (files.cert is None) != (files.key is None):
        raise ValueError("a client certificate needs its key, and the other way round")
    return grpc.ssl_channel_credentials(root_certificates=_read(files.ca), private_key=_read(files.key),
                                        certificate_chain=_read(files.cert))


def peer_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The verified client certificate's name, or None without mutual TLS."""
    auth = context.auth_context()
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        names = auth.get(key)
        if names:
            return names[0].decode(errors="replace")
    return None
