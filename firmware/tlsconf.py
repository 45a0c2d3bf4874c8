"""TLS for the door's MQTT uplink: the client context, and a plain reason when it fails.

The broker's entry in config.json says what to use (docs/protocol.md, "TLS"):
`"ca": "ca.pem"` (required for TLS), and optionally `"cert": "client.crt"`, `"key":
"client.key"` (client-certificate authentication). The paths are relative to the board's
`fs_root`. The files are read once per connection attempt and dropped as soon as mbedTLS has
parsed them, so a door that cannot connect does not keep a few KiB of PEM text on its heap.

mbedTLS is handed DER: some MicroPython builds (the unix port's among them) have no PEM
parser, and every build takes DER. So the PEM blocks are decoded here (base64), one
certificate at a time; a CA file may hold several (a CA being replaced, say).

Nothing here logs or returns key material: error texts name files, never their content.
"""

from binascii import a2b_base64

from firmware.config import broker_tls
from firmware.mqtt import TLSError


# One rule for "this broker wants TLS", shared with the uplink (which imports this module
# only when it does).
enabled = broker_tls


def _read(fs_root, name, what):
    path = name if name.startswith("/") else fs_root.rstrip("/") + "/" + name
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        raise TLSError("%s file %s is not on the door (commission it again)" % (what, name))


def _ders(data):
    """The DER bytes of each PEM block in `data` (or `data` itself when it is DER already)."""
    if data.find(b"-----BEGIN") < 0:
        return [data] if data else []
    out = []
    pos = 0
    while True:
        start = data.find(b"-----BEGIN", pos)
        if start < 0:
            return out
        body = data.find(b"\n", start) + 1
        end = data.find(b"-----END", body)
        if body <= 0 or end < 0:
            raise ValueError("truncated PEM block")
        der = a2b_base64(data[body:end])
        if not der:
            raise ValueError("empty PEM block")
        out.append(der)
        pos = end + 8


def client_context(fs_root, broker):
    """A `tls.SSLContext` for the broker: the server's certificate must chain to the CA file
    (`verify_mode = CERT_REQUIRED`; the hostname is checked against the broker's host when the
    socket is wrapped, `server_hostname`), and with `cert` and `key` the door presents its client
    certificate. Raises TLSError with a one-line reason when a file is missing or unusable."""
    ca = broker.get("ca")
    if not ca:
        raise TLSError("TLS is configured but no CA file (broker.ca): commission with --tls-ca")
    cert, key = broker.get("cert"), broker.get("key")
    if (cert or key) and not (cert and key):
        raise TLSError("a client certificate needs both broker.cert and broker.key")
    try:
        cas = _ders(_read(fs_root, ca, "CA"))
    except ValueError:
        cas = []
    if not cas:
        raise TLSError("CA file %s is not a certificate" % ca)
    import tls

    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
    try:
        for der in cas:
            # The C module takes it positionally (`cadata`); each call adds to the trusted set.
            ctx.load_verify_locations(der)
    except ValueError:
        raise TLSError("CA file %s is not a certificate" % ca)
    cas = der = None
    if cert:
        try:
            c = _ders(_read(fs_root, cert, "client certificate"))
            k = _ders(_read(fs_root, key, "client key"))
            if not c or not k:
                raise ValueError
            ctx.load_cert_chain(c[0], k[0])
        except ValueError:
            raise TLSError("client certificate %s or its key %s is not usable" % (cert, key))
        c = k = None
    return ctx


def _errno(e):
    return e.args[0] if e.args and isinstance(e.args[0], int) else None


# Connection failures that happen before any TLS byte: not a TLS problem.
_NETWORK = (111, 113, 101, 110, 103)  # ECONNREFUSED EHOSTUNREACH ENETUNREACH ETIMEDOUT ECONNABORTED

# mbedTLS's verification texts (x509_crt_verify_info) -> what the installer should read.
_VERIFY = (
    ("not correctly signed by the trusted CA", "certificate not trusted by the door's CA"),
    ("Common Name (CN) does not match", "the broker's certificate is not for this host name"),
    ("validity has expired", "the broker's certificate has expired"),
    ("validity starts in the future", "the broker's certificate is not valid yet (check the clock)"),
    ("revoked", "the broker's certificate is revoked"),
)


def failure_reason(e, host, client_cert):
    """One line saying why a TLS connection attempt failed, from the exception it raised;
    None when the failure is not about TLS (the broker's port refused the connection...)."""
    if isinstance(e, TLSError):
        return str(e)
    if isinstance(e, ValueError):
        text = " ".join(str(a) for a in e.args).strip()
        found = [why for pattern, why in _VERIFY if pattern in text]
        if found:
            why = "; ".join(found)
            if "host name" in why:
                why = why.replace("this host name", host)
            return "TLS handshake failed: " + why
        return "TLS handshake failed: " + (text.replace("\n", " ") or "certificate refused")
    no = _errno(e) if isinstance(e, OSError) else None
    if no in _NETWORK:
        return None
    if isinstance(e, OSError) and no is not None and no < 0:
        detail = " ".join(str(a) for a in e.args[1:]) or "mbedTLS error"
        return "TLS handshake failed: %s (-0x%04x)" % (detail, -no)
    if isinstance(e, (OSError, EOFError)):
        if client_cert:
            return ("TLS handshake failed: the broker closed the connection (its port is not TLS, "
                    "or it refused the door's client certificate)")
        return ("TLS handshake failed: the broker closed the connection (it may require a client "
                "certificate, which the door does not have, or its port is not TLS)")
    return None
