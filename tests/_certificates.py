# -*- test-case-name: tests.test_proxy_integration -*-
# mypy: allow-untyped-calls
"""
A throw-away CA and server certificates.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from attrs import define
from twisted.internet.ssl import PrivateCertificate

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

# TLS


@define(eq=False)
class Certificates:
    """
    A throw-away CA and server certificates in PEM.

    @ivar caPath: The CA certificate's file.
    @ivar servers: Server certificate and key (PEM, concatenated) by name.
    """

    caPath: str
    caPEM: bytes
    servers: dict[str, bytes]

    def serverOptions(self, name: str) -> Any:
        """
        TLS server options for the server certificate C{name}.
        """
        certificate = PrivateCertificate.loadPEM(self.servers[name])
        return certificate.options()


def selfSigned(
    commonName: str,
    names: Sequence[x509.GeneralName] = (),
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    key: EllipticCurvePrivateKey | None = None,
) -> tuple[EllipticCurvePrivateKey, x509.Certificate]:
    """
    Make a throw-away self-signed CA certificate, valid from a day ago for
    two days.

    @param commonName: Its subject's CN.
    @param names: Its subject alternative names, if any.
    @param extensions: More extensions, each with whether it is critical.
    @param key: Its key (a new one if not given).
    @return: The key and the certificate.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=False
        )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return key, builder.sign(key, hashes.SHA256())


def keyPEM(key: EllipticCurvePrivateKey) -> bytes:
    """
    @return: C{key}, PEM-encoded (PKCS#8, unencrypted).
    """
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def makeCertificates(directory: str, servers: dict[str, Sequence[str]]) -> Certificates:
    """
    Make a CA and, for each entry of C{servers}, a server certificate it
    signs whose subjectAltName lists the given DNS names and IP addresses.

    @param directory: Where C{ca.pem} is written (created if missing).
    @param servers: Host names and addresses by certificate name.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    notBefore, notAfter = (
        now - datetime.timedelta(days=1),
        now + datetime.timedelta(days=2),
    )

    def subject(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    caKey = ec.generate_private_key(ec.SECP256R1())
    _, caCert = selfSigned(
        "bluegreen test CA",
        key=caKey,
        extensions=[
            (
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            ),
            (x509.SubjectKeyIdentifier.from_public_key(caKey.public_key()), False),
        ],
    )
    caPEM = caCert.public_bytes(serialization.Encoding.PEM)
    os.makedirs(directory, exist_ok=True)
    caPath = os.path.join(directory, "ca.pem")
    with open(caPath, "wb") as f:
        f.write(caPEM)
    made: dict[str, bytes] = {}
    for certName, hosts in servers.items():
        key = ec.generate_private_key(ec.SECP256R1())
        alternatives: list[x509.GeneralName] = []
        for host in hosts:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alternatives.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject(hosts[0]))
            .issuer_name(caCert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(notBefore)
            .not_valid_after(notAfter)
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(
                x509.BasicConstraints(ca=False, path_length=None), critical=True
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(caKey.public_key()),
                critical=False,
            )
            .sign(caKey, hashes.SHA256())
        )
        made[certName] = cert.public_bytes(serialization.Encoding.PEM) + keyPEM(key)
    return Certificates(caPath, caPEM, made)
