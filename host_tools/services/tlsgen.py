"""Throwaway TLS material for tests: a CA, a server certificate for loopback, client certificates.

Made with `cryptography` on the spot (nothing is downloaded, nothing is kept): EC P-256 keys
(small and quick for the door's mbedTLS), certificates valid from an hour ago for two days.
The server certificate names `IP:127.0.0.1` and `DNS:localhost`, so a door that checks the
broker's hostname accepts it for either, and nothing else.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Issued:
    """A certificate and its private key, as PEM files in a directory."""

    cert: Path
    key: Path


class CA:
    """A self-signed certificate authority that issues server and client certificates."""

    def __init__(self, directory: Path, name: str = "doorctl test CA") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._key = _key()
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()),
                           critical=False)
            .sign(self._key, hashes.SHA256())
        )
        stem = name.replace(" ", "-")
        self.cert = self.dir / f"{stem}.pem"
        self.cert.write_bytes(_cert_pem(self._cert))

    def _issue(self, stem: str, common_name: str, san: list[x509.GeneralName] | None,
               usage: x509.ObjectIdentifier) -> Issued:
        key = _key()
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        out = Issued(self.dir / f"{stem}.crt", self.dir / f"{stem}.key")
        out.cert.write_bytes(_cert_pem(cert))
        out.key.write_bytes(_key_pem(key))
        out.key.chmod(0o600)
        return out

    def server(self, stem: str = "server", hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Issued:
        """A broker certificate whose subjectAltName lists `hosts` (IP addresses or names)."""
        import ipaddress

        san: list[x509.GeneralName] = []
        for h in hosts:
            try:
                san.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                san.append(x509.DNSName(h))
        return self._issue(stem, hosts[0] if hosts else "server", san, ExtendedKeyUsageOID.SERVER_AUTH)

    def client(self, common_name: str, stem: str | None = None) -> Issued:
        """A client certificate (for a door or the platform) with `common_name`."""
        return self._issue(stem or f"client-{common_name}", common_name, None,
                           ExtendedKeyUsageOID.CLIENT_AUTH)
