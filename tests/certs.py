"""Certificates made at test time: a CA, a server certificate for 127.0.0.1 / localhost, and
client certificates signed by that CA or by another one (which the server must refuse)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from server.tls import TlsFiles


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(cn: str, issuer: Issued | None, *, ca: bool = False, server: bool = False) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(cn))
               .issuer_name(issuer.cert.subject if issuer else _name(cn))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    elif server:
        builder = (builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return Issued(builder.sign((issuer or Issued(None, key)).key, hashes.SHA256()), key)  # type: ignore[arg-type]


def _write(issued: Issued, directory: Path, stem: str) -> tuple[Path, Path]:
    cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(issued.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    return cert, key


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: TlsFiles  # cert + key the server presents (ca = the client CA: mutual TLS)
    alice: TlsFiles  # a client signed by the CA, common name "alice"
    mallory: TlsFiles  # a client signed by another CA
    no_cert: TlsFiles  # trusts the CA, presents nothing


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = _issue("Lethe test CA", None, ca=True)
    other_ca = _issue("Some other CA", None, ca=True)
    ca_path, _ = _write(ca, directory, "ca")
    server_cert, server_key = _write(_issue("lethe-server", ca, server=True), directory, "server")
    alice_cert, alice_key = _write(_issue("alice", ca), directory, "alice")
    mallory_cert, mallory_key = _write(_issue("mallory", other_ca), directory, "mallory")
    return Pki(ca=ca_path, server=TlsFiles(server_cert, server_key, ca_path),
                   alice=TlsFiles(alice_cert, alice_key, ca_path),
                   mallory=TlsFiles(mallory_cert, mallory_key, ca_path), no_cert=TlsFiles(None, None, ca_path))
