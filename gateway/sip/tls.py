"""TLS for SIP (RFC 3261 §26, RFC 5630): the gateway's certificate, the server context
of its listener, and client contexts that verify peers with service-identity.

With no certificate configured, a self-signed one is generated into
``<data_dir>/tls/`` on first start (EC P-256, SHA-256, the gateway's domains, host
names and loopback addresses as subject alternative names) and reused afterwards; its
SHA-256 fingerprint is logged at every start so peers can pin or import it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl as stdlib_ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet import ssl

from gateway.log import get_logger
from gateway.sip.address import is_ip_literal

log = get_logger("gateway.sip.tls")

GENERATED_DIR = "tls"
GENERATED_CERT = "gateway.crt"
GENERATED_KEY = "gateway.key"
GENERATED_DAYS = 3650
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsSetupError(Exception):
    """The TLS material cannot be used; ``str()`` is one line naming the setting
    (``tls.<field>``, the field of :class:`TlsSettings`)."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """How the TLS transport is set up: the certificate files (empty: generate one), the
    trust store for peers, client certificates, protocol floor and ciphers."""

    certificate: str
    private_key: str
    chain: str
    ca_file: str
    require_client_cert: bool
    min_version: str
    ciphers: str
    #: Names of the clients whose certificates are asked for on the SIP TLS listener and
    #: checked (the gateways of the site); their connections carry that identity.
    client_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class TlsMaterial:
    """The gateway's certificate and key, the chain sent with it, and where it came from."""

    certificate: x509.Certificate
    private_key: Any  # a cryptography private key
    chain: tuple[x509.Certificate, ...]
    source: str  # the file it was read from
    generated: bool

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint, colon-separated upper-case hex (as ``openssl x509
        -fingerprint -sha256`` prints it)."""
        return self.certificate.fingerprint(hashes.SHA256()).hex(":").upper()

    @property
    def dns_names(self) -> tuple[str, ...]:
        """The host names the certificate proves (its DNS subjectAltNames, wildcards
        left out): names of this gateway, as a Route or Request-URI may use them."""
        try:
            san = self.certificate.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return ()
        return tuple(name for name in san.get_values_for_type(x509.DNSName)
                     if not name.startswith("*"))

    @property
    def subject(self) -> str:
        """The certificate's common name (or its whole subject)."""
        subject = self.certificate.subject
        names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else subject.rfc4514_string()


def _read(path: str, key: str, section: str = "tls") -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsSetupError(f"{section}.{key}: cannot read {path}: {exc.strerror}") from None


def _pem_certificates(data: bytes, path: str, key: str,
                      section: str = "tls") -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise TlsSetupError(f"{section}.{key}: no PEM certificate in {path}")
    return certificates


def load_material(config: TlsSettings, data_dir: str, names: Iterable[str],
                  addresses: Iterable[str]) -> TlsMaterial:
    """The configured certificate, or the generated one (created or renewed when it is
    missing, expired or lacks one of ``names``; the first name is its common name)."""
    if config.certificate:
        return _configured(config)
    return _generated(Path(data_dir) / GENERATED_DIR, list(dict.fromkeys(names)),
                      list(dict.fromkeys(addresses)))


def _configured(config: TlsSettings) -> TlsMaterial:
    material = load_certificate(config.certificate, config.private_key)
    if not config.chain:
        return material
    chain = (*material.chain,
             *_pem_certificates(_read(config.chain, "chain"), config.chain, "chain"))
    return TlsMaterial(material.certificate, material.private_key, chain, material.source,
                       generated=False)


def load_certificate(certificate: str, private_key: str, section: str = "tls") -> TlsMaterial:
    """A certificate (leaf first, then its chain) and its unencrypted private key (from
    ``private_key``, else the certificate file) from PEM files; errors name the setting
    (``<section>.certificate`` or ``<section>.private_key``)."""
    certificates = _pem_certificates(_read(certificate, "certificate", section), certificate,
                                     "certificate", section)
    key_path, key_name = ((private_key, "private_key") if private_key
                          else (certificate, "certificate"))
    key_data = _read(key_path, key_name, section)
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else "no unencrypted PEM private key"
        raise TlsSetupError(f"{section}.{key_name}: cannot load the private key from "
                            f"{key_path}: {detail}") from None
    leaf = certificates[0]
    if leaf.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo):
        raise TlsSetupError(f"{section}.{key_name}: the private key in {key_path} does not "
                            f"belong to the certificate in {certificate}")
    return TlsMaterial(leaf, key, tuple(certificates[1:]), certificate, generated=False)


def _twisted(certificate: x509.Certificate) -> ssl.Certificate:
    return ssl.Certificate.loadPEM(certificate.public_bytes(serialization.Encoding.PEM))


def _generated(directory: Path, names: list[str], addresses: list[str]) -> TlsMaterial:
    cert_path, key_path = directory / GENERATED_CERT, directory / GENERATED_KEY
    if cert_path.exists() and key_path.exists():
        try:
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise TlsSetupError(f"tls.certificate: the generated certificate in {directory} "
                                f"cannot be read ({exc}); remove it to get a new one") from None
        missing = _missing_names(certificate, names, addresses)
        expired = certificate.not_valid_after_utc <= datetime.datetime.now(datetime.UTC)
        if not missing and not expired:
            return TlsMaterial(certificate, key, (), str(cert_path), generated=True)
        log.warn("renewing the self-signed TLS certificate in {dir}: {why}", dir=str(directory),
                 why="expired" if expired else f"does not name {', '.join(missing)}")
    certificate, key = self_signed(names, addresses)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_private(key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise TlsSetupError(f"gateway.data_dir: cannot write the TLS certificate to "
                            f"{directory}: {exc.strerror}") from None
    material = TlsMaterial(certificate, key, (), str(cert_path), generated=True)
    log.info("generated a self-signed TLS certificate in {path}", path=str(cert_path))
    return material


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _missing_names(certificate: x509.Certificate, names: list[str],
                   addresses: list[str]) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return names + addresses
    dns = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return [n for n in names if n.lower() not in dns] + [a for a in addresses if a not in ips]


def self_signed(names: list[str], addresses: list[str]) -> tuple[x509.Certificate, Any]:
    """A new P-256 key and a self-signed certificate naming ``names`` (DNS) and
    ``addresses`` (IP), as the gateway generates when none is configured."""
    key = ec.generate_private_key(ec.SECP256R1())
    common_name = names[0] if names else socket.gethostname() or "p2psip-gateway"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "p2psip-gateway")])
    alternative: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alternative += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=GENERATED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                     content_commitment=False, data_encipherment=False,
                                     key_agreement=True, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def trust_root(config: TlsSettings) -> Any:
    """The trust store peers are verified against: ``tls.ca_file``, else the system's."""
    if not config.ca_file:
        return ssl.platformTrust()
    certificates = _pem_certificates(_read(config.ca_file, "ca_file"), config.ca_file,
                                     "ca_file")
    return ssl.trustRootFromCertificates([_twisted(c) for c in certificates])


def _ciphers(config: TlsSettings) -> Any:
    if not config.ciphers:
        return None  # Twisted's default: forward-secret AEAD suites only
    if not _any_cipher(config.ciphers):
        raise TlsSetupError(f"tls.ciphers: {config.ciphers!r} selects no cipher")
    return ssl.AcceptableCiphers.fromOpenSSLCipherString(config.ciphers)


def _any_cipher(cipher_string: str) -> bool:
    context = SSL.Context(SSL.TLS_METHOD)
    try:
        context.set_cipher_list(cipher_string.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError):
        return False
    return True


class TlsContexts:
    """The server options of the listener and per-name client options for outgoing
    connections, built once from the configuration."""

    def __init__(self, config: TlsSettings, material: TlsMaterial) -> None:
        self.config = config
        self.material = material
        self.require_client_cert = config.require_client_cert
        if config.require_client_cert and not config.ca_file:
            raise TlsSetupError("tls.ca_file: needed to verify client certificates when "
                                "tls.require_client_cert is on")
        self._trust = trust_root(config)
        self._common: dict[str, Any] = {"raiseMinimumTo": _VERSIONS[config.min_version]}
        ciphers = _ciphers(config)
        if ciphers is not None:
            self._common["acceptableCiphers"] = ciphers
        server: dict[str, Any] = dict(self._common)
        if config.require_client_cert:
            server["trustRoot"] = self._trust  # implies verify + requireCertificate
        self.server = ssl.CertificateOptions(
            privateKey=material.private_key, certificate=material.certificate,
            extraCertChain=list(material.chain), **server)
        try:
            self.server.getContext()
        except SSL.Error as exc:
            raise TlsSetupError(f"tls.ciphers: {_ssl_error(exc)}") from None
        #: The SIP TLS listener's options: :attr:`server`, asking clients for a
        #: certificate when some are to be recognised (never on WSS, where a browser
        #: would offer its user a certificate picker).
        self.sip_server = self.server
        self._identities: ClientIdentities | None = None
        if config.client_names:
            self._identities = ClientIdentities(config.client_names, config.ca_file)
            if not config.require_client_cert:
                self.sip_server = ssl.CertificateOptions(
                    privateKey=material.private_key, certificate=material.certificate,
                    extraCertChain=list(material.chain), **server)
                # Ask, accept whatever comes (phones without certificates, or with
                # ones nobody can check); ClientIdentities judges after the handshake.
                self.sip_server.getContext().set_verify(SSL.VERIFY_PEER,
                                                        lambda *_args: True)
        self._clients: dict[str, Any] = {}

    def client_identity(self, connection: Any) -> str:
        """Which of ``client_names`` the peer of an accepted TLS connection (a pyOpenSSL
        connection) proved with its certificate; "" for none."""
        if self._identities is None:
            return ""
        return self._identities.identify(connection)

    def client(self, server_name: str) -> Any:
        """Options for a connection to ``server_name`` (a host name or IP address) that
        verify its certificate against the trust store and check the name with
        service-identity; the gateway's certificate goes along for mutual TLS."""
        creator = self._clients.get(server_name)
        if creator is None:
            extra = dict(self._common, privateKey=self.material.private_key,
                         certificate=self.material.certificate)
            if self.material.chain:
                extra["extraCertChain"] = list(self.material.chain)
            creator = ssl.optionsForClientTLS(server_name, trustRoot=self._trust,
                                              extraCertificateOptions=extra)
            if len(self._clients) < 1024:
                self._clients[server_name] = creator
        return creator


class ClientIdentities:
    """Recognises known clients (``names``) by their TLS certificates: a certificate
    chain the trust store (``ca_file``, else the system's) verifies, whose leaf names
    one of them (checked by service-identity, as servers' names are)."""

    def __init__(self, names: Iterable[str], ca_file: str) -> None:
        self.names = tuple(names)
        self._store = crypto.X509Store()
        if ca_file:
            self._store.load_locations(ca_file)
        else:
            paths = stdlib_ssl.get_default_verify_paths()
            if paths.cafile or paths.capath:  # none on a machine without a CA bundle
                self._store.load_locations(paths.cafile, paths.capath)

    def identify(self, connection: Any) -> str:
        """The name ``connection``'s peer certificate proves, "" when none."""
        leaf = connection.get_peer_certificate()
        if leaf is None:
            return ""
        # Server side, OpenSSL's peer chain leaves the leaf out; the client may still
        # have sent it first. Either way it is not an intermediate.
        chain = [c for c in connection.get_peer_cert_chain() or []
                 if c.to_cryptography() != leaf.to_cryptography()]
        try:
            crypto.X509StoreContext(self._store, leaf, chain).verify_certificate()
        except crypto.X509StoreContextError:
            return ""
        certificate = leaf.to_cryptography()
        for name in self.names:
            try:
                if is_ip_literal(name):
                    verify_certificate_ip_address(certificate, name)
                else:
                    verify_certificate_hostname(certificate, name)
            except (VerificationError, CertificateError):
                continue
            return name
        return ""


def _ssl_error(exc: SSL.Error) -> str:
    parts = [item[-1] for item in exc.args[0]] if exc.args and isinstance(exc.args[0], list) \
        else [str(exc)]
    return "; ".join(str(p) for p in parts) or "OpenSSL error"


def describe_failure(reason: Any) -> str:
    """A short reason for a TLS connection that failed (for logs and 503 phrases)."""
    value = getattr(reason, "value", reason)
    name = type(value).__name__
    if name == "VerificationError":
        return "certificate name mismatch"
    if isinstance(value, SSL.Error):
        text = _ssl_error(value)
        if "certificate verify failed" in text:
            return "certificate not trusted"
        return f"TLS error: {text}"
    message = reason.getErrorMessage() if hasattr(reason, "getErrorMessage") else str(value)
    return message.splitlines()[0] if message else name
