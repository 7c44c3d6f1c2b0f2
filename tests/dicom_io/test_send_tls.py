"""DICOM TLS for ``--send-to``: pynetdicom's own Storage SCP with TLS on 127.0.0.1.

Certificates are made in the test with the ``openssl`` command (EC P-256, valid 2 days): a
site CA that signs the PACS's and our client certificate, and a stranger CA that signs the
certificates that must be refused.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

from dicom_io.errors import InvalidArgumentError
from dicom_io.send import Destination, send_files, tls_context

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
SCP_AE = "TLS_SCP"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}", cwd=folder)


def _signed(folder: Path, name: str, ca: str, extensions: str) -> None:
    (folder / f"{name}.ext").write_text(extensions + "\n", encoding="ascii")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=folder)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tls")
    _ca(folder, "site-ca")
    _ca(folder, "stranger-ca")
    server = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"
    _signed(folder, "pacs", "site-ca", server)
    _signed(folder, "impostor-pacs", "stranger-ca", server)
    _signed(folder, "elsewhere-pacs", "site-ca", "subjectAltName=DNS:pacs.example.org\nextendedKeyUsage=serverAuth")
    _signed(folder, "screen", "site-ca", "extendedKeyUsage=clientAuth")
    _signed(folder, "stranger", "stranger-ca", "extendedKeyUsage=clientAuth")
    return folder


StartTlsPacs = Callable[..., tuple[int, list[str]]]


@pytest.fixture
def tls_pacs(certs: Path) -> Iterator[StartTlsPacs]:
    """``tls_pacs(cert_name)`` -> (port, stored SOP Instance UIDs): a TLS Storage SCP that
    requires a client certificate signed by the site CA."""
    servers: list[Any] = []

    def _start(cert: str = "pacs") -> tuple[int, list[str]]:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certs / f"{cert}.pem", certs / f"{cert}.key")
        context.load_verify_locations(certs / "site-ca.pem")
        context.verify_mode = ssl.CERT_REQUIRED
        stored: list[str] = []
        lock = threading.Lock()

        def on_store(event: Any) -> int:
            with lock:
                stored.append(str(event.dataset.SOPInstanceUID))
            return 0x0000

        ae = AE(ae_title=SCP_AE)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        server = ae.start_server(("127.0.0.1", 0), block=False, ssl_context=context,
                                 evt_handlers=[(evt.EVT_C_STORE, on_store)])
        assert server is not None
        servers.append(server)
        return int(server.server_address[1]), stored

    yield _start
    for server in servers:
        server.shutdown()


def test_sends_over_mutual_tls(certs: Path, tls_pacs: StartTlsPacs, write_dicom: Any) -> None:
    port, stored = tls_pacs()
    paths = [write_dicom(f"a{i}.dcm") for i in range(2)]
    context = tls_context(ca_file=certs / "site-ca.pem", cert_file=certs / "screen.pem", key_file=certs / "screen.key")
    results = send_files(paths, Destination(SCP_AE, "127.0.0.1", port), tls=context, retries=0, timeout_s=10)
    assert [r.ok for r in results] == [True, True], [r.error for r in results]
    assert sorted(stored) == sorted(r.sop_instance_uid for r in results)


def test_a_pacs_certificate_of_another_ca_is_refused(certs: Path, tls_pacs: StartTlsPacs, write_dicom: Any) -> None:
    port, stored = tls_pacs("impostor-pacs")
    context = tls_context(ca_file=certs / "site-ca.pem", cert_file=certs / "screen.pem", key_file=certs / "screen.key")
    [result] = send_files([write_dicom()], Destination(SCP_AE, "127.0.0.1", port), tls=context, retries=0,
                          timeout_s=10)
    assert not result.ok and result.status is None and result.attempts == 1
    assert "over TLS: the TLS handshake failed" in result.error
    assert stored == []


def test_the_pacs_refuses_a_client_certificate_of_another_ca(certs: Path, tls_pacs: StartTlsPacs,
                                                             write_dicom: Any) -> None:
    port, stored = tls_pacs()
    context = tls_context(ca_file=certs / "site-ca.pem", cert_file=certs / "stranger.pem",
                          key_file=certs / "stranger.key")
    [result] = send_files([write_dicom()], Destination(SCP_AE, "127.0.0.1", port), tls=context, retries=0,
                          timeout_s=10)
    assert not result.ok and "TLS" in result.error
    assert stored == []


def test_the_host_name_is_checked(certs: Path, tls_pacs: StartTlsPacs, write_dicom: Any) -> None:
    """A certificate of the site CA issued to another host is refused, unless verification is
    turned off ([send] verify = false: a test PACS only)."""
    port, stored = tls_pacs("elsewhere-pacs")
    files = dict(cert_file=certs / "screen.pem", key_file=certs / "screen.key")
    destination = Destination(SCP_AE, "127.0.0.1", port)
    [refused] = send_files([write_dicom("b.dcm")], destination, retries=0, timeout_s=10,
                           tls=tls_context(ca_file=certs / "site-ca.pem", **files))
    assert not refused.ok and "TLS handshake failed" in refused.error and stored == []
    [sent] = send_files([write_dicom("c.dcm")], destination, retries=0, timeout_s=10,
                        tls=tls_context(verify=False, **files))
    assert sent.ok and stored == [sent.sop_instance_uid]


def test_unusable_tls_files_name_the_file(certs: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"cannot use the TLS files \(ca_file '.*missing.pem'\)"):
        tls_context(ca_file=tmp_path / "missing.pem")
    with pytest.raises(InvalidArgumentError, match="key matching the certificate"):
        tls_context(ca_file=certs / "site-ca.pem", cert_file=certs / "screen.pem", key_file=certs / "stranger.key")
    with pytest.raises(InvalidArgumentError, match="cert_file and key_file together"):
        tls_context(cert_file=certs / "screen.pem")
