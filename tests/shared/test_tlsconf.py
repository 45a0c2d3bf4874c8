# firmware/tlsconf.py on both interpreters: PEM to DER, the files on the door's flash, and the
# one-line reasons for TLS failures. The mbedTLS part (tls.SSLContext) runs under MicroPython only.
# The vectors are a throwaway EC CA and client certificate (host_tools/services/tlsgen.py); their
# validity does not matter here: nothing is verified, only parsed.
import os
from binascii import a2b_base64

from firmware import tlsconf
from firmware.mqtt import MQTTError, TLSError
from tests.scratch import scratch_dir

CA_PEM = (
    b'-----BEGIN CERTIFICATE-----\n'
    b'MIIBbzCCARWgAwIBAgIUPKSli5ZqsxDQp8A0mdlgL+Ir27YwCgYIKoZIzj0EAwIw\n'
    b'FDESMBAGA1UEAwwJdmVjdG9yIENBMB4XDTI2MTIwMjA5MjcxMloXDTI2MTIwNDEw\n'
    b'MjcxMlowFDESMBAGA1UEAwwJdmVjdG9yIENBMFkwEwYHKoZIzj0CAQYIKoZIzj0D\n'
    b'AQcDQgAElVHcCDp/pZIYcohzdDLccPLrSNLrE9BYBX0aiiecgK4WpHqlpgx7hk20\n'
    b'Uzfxh5u0UipvX/h3CzjGTHDr11OZjaNFMEMwEgYDVR0TAQH/BAgwBgEB/wIBADAO\n'
    b'BgNVHQ8BAf8EBAMCAYYwHQYDVR0OBBYEFNoGWEzGnwumFWzzWHV9kuu87ExUMAoG\n'
    b'CCqGSM49BAMCA0gAMEUCIQD2wuy6OTemEXTsNVT8NZ/Zk0eDgHjNj0WwA4J/4NXh\n'
    b'cwIgc0heexIw4PT6LGPxeRqCq4zSzZb9pY6WXrnlFCjOD/Q=\n'
    b'-----END CERTIFICATE-----\n'
)

CERT_PEM = (
    b'-----BEGIN CERTIFICATE-----\n'
    b'MIIBczCCARigAwIBAgIUBF4dpYXD7reYZpjXDJQenj5E2ygwCgYIKoZIzj0EAwIw\n'
    b'FDESMBAGA1UEAwwJdmVjdG9yIENBMB4XDTI2MTIwMjA5MjcxMloXDTI2MTIwNDEw\n'
    b'MjcxMlowFjEUMBIGA1UEAwwLdmVjdG9yLWRvb3IwWTATBgcqhkjOPQIBBggqhkjO\n'
    b'PQMBBwNCAARA6edqB3+HkSDLY8WSv6IDfHQmttMPb7QKYwgzERXRsMEU3+/d264c\n'
    b'6ULGvxh36K9d8+iBUwBmEQ5qG7zRkOhxo0YwRDAMBgNVHRMBAf8EAjAAMBMGA1Ud\n'
    b'JQQMMAoGCCsGAQUFBwMCMB8GA1UdIwQYMBaAFNoGWEzGnwumFWzzWHV9kuu87ExU\n'
    b'MAoGCCqGSM49BAMCA0kAMEYCIQCCejYMI++3M6c/mGJZQfZ16M5IRAC5V8jvzrLT\n'
    b'j0+N5QIhAJnl/yeTu16fgh6dMmVQfpbhXeZOh/I/wrqhXd6crrXc\n'
    b'-----END CERTIFICATE-----\n'
)

KEY_PEM = (
    b'-----BEGIN PRIVATE KEY-----\n'
    b'MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg8Z4bxNTP1V88oYo6\n'
    b'8apwLvFlpExL1YHd+RrXzRY90MyhRANCAARA6edqB3+HkSDLY8WSv6IDfHQmttMP\n'
    b'b7QKYwgzERXRsMEU3+/d264c6ULGvxh36K9d8+iBUwBmEQ5qG7zRkOhx\n'
    b'-----END PRIVATE KEY-----\n'
)

try:
    import tls  # noqa: F401
    HAVE_TLS = True
except ImportError:  # CPython
    HAVE_TLS = False


def _root(files):
    getpid = getattr(os, "getpid", None)
    base = scratch_dir() + "/tlsconf-test-%d" % (getpid() if getpid else 0)
    try:
        os.mkdir(base)
    except OSError:
        pass
    for name in os.listdir(base):
        os.remove(base + "/" + name)
    for name, data in files.items():
        with open(base + "/" + name, "wb") as f:
            f.write(data)
    return base


def _reason(fn, *args):
    try:
        fn(*args)
    except TLSError as e:
        return str(e)
    raise AssertionError("accepted")


def test_pem_blocks_become_der():
    body = CA_PEM.split(b"\n", 1)[1].split(b"-----END")[0]
    der = a2b_base64(body)
    assert der[0] == 0x30  # an ASN.1 SEQUENCE
    assert tlsconf._ders(CA_PEM) == [der]
    assert tlsconf._ders(b"# a bundle\n" + CERT_PEM + CA_PEM)[1] == der
    assert tlsconf._ders(der) == [der]  # DER already
    assert tlsconf._ders(b"") == []
    try:
        tlsconf._ders(CA_PEM[:40])
    except ValueError:
        pass
    else:
        raise AssertionError("a truncated block was accepted")


def test_enabled_and_tls_error_is_an_mqtt_error():
    assert tlsconf.enabled({"host": "h", "ca": "ca.pem"})
    assert tlsconf.enabled({"host": "h", "ssl": True})
    assert not tlsconf.enabled({"host": "h", "ssl": False})
    assert issubclass(TLSError, MQTTError)  # the uplink retries it like any failed connection


def test_missing_or_broken_files_are_named_never_their_content():
    root = _root({"junk.pem": b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                  "client.key": KEY_PEM})
    assert "no CA file" in _reason(tlsconf.client_context, root, {"ssl": True})
    assert _reason(tlsconf.client_context, root, {"ca": "ca.pem"}) == \
        "CA file ca.pem is not on the door (commission it again)"
    assert _reason(tlsconf.client_context, root, {"ca": "junk.pem"}) == \
        "CA file junk.pem is not a certificate"
    why = _reason(tlsconf.client_context, root, {"ca": "junk.pem", "key": "client.key"})
    assert why == "a client certificate needs both broker.cert and broker.key"
    assert "BEGIN" not in why


def test_context_loads_the_ca_and_the_client_certificate():
    if not HAVE_TLS:
        return  # CPython has no `tls` module: the device part runs under MicroPython
    root = _root({"ca.pem": CERT_PEM + CA_PEM, "client.crt": CERT_PEM, "client.key": KEY_PEM,
                  "bad.key": KEY_PEM.replace(b"M", b"N")})
    ctx = tlsconf.client_context(root, {"ca": "ca.pem"})
    assert ctx.verify_mode == tls.CERT_REQUIRED
    tlsconf.client_context(root, {"ca": "ca.pem", "cert": "client.crt", "key": "client.key"})
    why = _reason(tlsconf.client_context, root, {"ca": "ca.pem", "cert": "client.crt", "key": "bad.key"})
    assert why == "client certificate client.crt or its key bad.key is not usable"


def test_failure_reasons():
    r = tlsconf.failure_reason
    assert r(ValueError("\nThe certificate is not correctly signed by the trusted CA\n"), "h", False) == \
        "TLS handshake failed: certificate not trusted by the door's CA"
    assert r(ValueError("\nThe certificate Common Name (CN) does not match with the expected CN\n"),
             "10.0.0.5", False) == "TLS handshake failed: the broker's certificate is not for 10.0.0.5"
    assert r(ValueError("\nThe certificate validity has expired\n"), "h", False) == \
        "TLS handshake failed: the broker's certificate has expired"
    assert r(OSError(111), "h", False) is None  # connection refused: not a TLS problem
    assert r(OSError(-30592, "MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE"), "h", False) == \
        "TLS handshake failed: MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE (-0x7780)"
    assert "which the door does not have" in r(OSError(104), "h", False)
    assert "refused the door's client certificate" in r(EOFError(), "h", True)
    assert r(TLSError("CA file ca.pem is not a certificate"), "h", False) == \
        "CA file ca.pem is not a certificate"
