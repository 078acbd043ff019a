"""The SCP as a peer sees it: who may associate, TLS, verification and transfer syntaxes.

Peers are DCMTK's ``storescu`` and ``echoscu``; certificates are made with the
``openssl`` command line for each session.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from db.vocabulary import AuditEventType
from training.phantom import PhantomStudy


def test_allowed_calling_ae_stores_and_other_ae_is_rejected_and_audited(
    phantoms: Callable[..., PhantomStudy],
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    storescu: Callable[..., Any],
    echoscu: Callable[..., Any],
    recorded: Any,
    poll: Callable[..., Any],
) -> None:
    study = phantoms("small-ae", slices=3, size=64, seed=10)
    settings = make_settings(database_url=database_url, allowed_calling_aets=["CT_ROOM_1"])
    service = run_listener(settings)

    refused = storescu(service.port, study.files, aet="INTRUDER")
    refused_echo = echoscu(service.port, aet="INTRUDER")
    accepted = storescu(service.port, study.files, aet="CT_ROOM_1")

    assert refused.returncode != 0
    assert "Association Rejected" in refused.output
    assert refused_echo.returncode != 0
    assert accepted.ok, accepted.output
    rejections = poll(
        lambda: recorded.events(AuditEventType.ASSOCIATION_REJECTED), what="rejection audit"
    )
    assert {event.actor for event in rejections} == {"ae:INTRUDER"}
    assert len(recorded.instances(study.study_uid)) == 3
    assert {i.calling_aet for i in recorded.instances(study.study_uid)} == {"CT_ROOM_1"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_echo_is_answered(
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    echoscu: Callable[..., Any],
) -> None:
    service = run_listener(make_settings(database_url=database_url))

    result = echoscu(service.port, args=["-v"])

    assert result.ok, result.output
    assert "Received Echo Response (Success)" in result.output


# -- TLS ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(
        ["openssl", *(str(a) for a in args)],
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _signed(folder: Path, name: str, subject: str, extensions: str) -> None:
    (folder / f"{name}.ext").write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", subject, cwd=folder)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.crt",
             "-extfile", f"{name}.ext", cwd=folder)  # fmt: skip


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A private CA, a server certificate for 127.0.0.1 and a client certificate."""
    folder = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "2", "-subj", "/CN=pacs-triage test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)  # fmt: skip
    leaf = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
    _signed(
        folder,
        "server",
        "/CN=localhost",
        leaf + "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    _signed(folder, "client", "/CN=CT_ROOM_1", leaf + "extendedKeyUsage=clientAuth\n")
    return Certificates(
        folder / "ca.crt",
        folder / "server.crt",
        folder / "server.key",
        folder / "client.crt",
        folder / "client.key",
    )


def _with_client_cert(certs: Certificates) -> list[str]:
    return ["+tls", str(certs.client_key), str(certs.client_cert), "+cf", str(certs.ca)]


def _anonymous(certs: Certificates) -> list[str]:
    return ["+tla", "+cf", str(certs.ca)]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_tls_store_succeeds_and_plain_tcp_is_refused(
    certificates: Certificates,
    phantoms: Callable[..., PhantomStudy],
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    storescu: Callable[..., Any],
    recorded: Any,
) -> None:
    study = phantoms("small-tls", slices=3, size=64, seed=11)
    settings = make_settings(
        database_url=database_url,
        tls_cert=certificates.server_cert,
        tls_key=certificates.server_key,
    )
    service = run_listener(settings)

    with_cert = storescu(service.port, study.files[:1], args=_with_client_cert(certificates))
    anonymous = storescu(service.port, study.files[1:], args=_anonymous(certificates))
    plain = storescu(service.port, study.files)

    assert with_cert.ok, with_cert.output
    assert anonymous.ok, "without a CA configured, client certificates are not required"
    assert plain.returncode != 0
    assert len(recorded.instances(study.study_uid)) == 3


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_mutual_tls_refuses_client_without_certificate(
    certificates: Certificates,
    phantoms: Callable[..., PhantomStudy],
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    storescu: Callable[..., Any],
    echoscu: Callable[..., Any],
    recorded: Any,
) -> None:
    study = phantoms("small-tls", slices=3, size=64, seed=11)
    settings = make_settings(
        database_url=database_url,
        tls_cert=certificates.server_cert,
        tls_key=certificates.server_key,
        tls_ca=certificates.ca,
    )
    service = run_listener(settings)

    anonymous = storescu(service.port, study.files, args=_anonymous(certificates))
    echo = echoscu(service.port, args=_with_client_cert(certificates))
    with_cert = storescu(service.port, study.files, args=_with_client_cert(certificates))

    assert anonymous.returncode != 0
    assert echo.ok, echo.output
    assert with_cert.ok, with_cert.output
    assert len(recorded.instances(study.study_uid)) == 3


# -- transfer syntaxes -----------------------------------------------------------------------
TRANSFER_SYNTAXES = [
    # (id, how DCMTK converts the file, storescu proposal, expected transfer syntax)
    pytest.param(("dcmcjpeg", "+e1"), "-xs", JPEGLosslessSV1, id="jpeg-lossless-sv1"),
    pytest.param(("dcmcjpls", "+el"), "-xt", JPEGLSLossless, id="jpeg-ls-lossless"),
    pytest.param(("dcmcrle",), "-xr", RLELossless, id="rle"),
    pytest.param(("dcmconv", "+td"), "-xd", DeflatedExplicitVRLittleEndian, id="deflated"),
    pytest.param(("dcmconv", "+tb"), "-xb", ExplicitVRBigEndian, id="big-endian"),
    pytest.param(("dcmconv", "+ti"), "-xi", ImplicitVRLittleEndian, id="implicit"),
    # DCMTK 3.6.7 has no JPEG 2000 encoder: pydicom's openjpeg plugin encodes, DCMTK sends.
    pytest.param(("pydicom", JPEG2000Lossless), "-xv", JPEG2000Lossless, id="jpeg-2000-lossless"),
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("convert", "proposal", "syntax"), TRANSFER_SYNTAXES)
def test_compressed_transfer_syntax_arrives_intact(
    convert: tuple[str, ...],
    proposal: str,
    syntax: str,
    phantoms: Callable[..., PhantomStudy],
    tmp_path: Path,
    reencode: Callable[..., bytes],
    database_url: str,
    make_settings: Callable[..., Any],
    run_listener: Callable[..., Any],
    storescu: Callable[..., Any],
    recorded: Any,
) -> None:
    study = phantoms("small-tsx", slices=2, size=128, seed=12)
    converted = []
    for index, original in enumerate(study.files):
        target = tmp_path / f"{index}.dcm"
        reencode(original, convert, target)
        assert pydicom.dcmread(target, stop_before_pixels=True).file_meta.TransferSyntaxUID == (
            syntax
        )
        converted.append(target)
    service = run_listener(make_settings(database_url=database_url))

    sent = storescu(service.port, converted, args=[proposal])

    assert sent.ok, sent.output
    instances = recorded.instances(study.study_uid)
    assert [i.transfer_syntax_uid for i in instances] == [syntax, syntax]
    for original, instance in zip(study.files, instances, strict=True):
        stored = pydicom.dcmread(instance.file_path)
        assert stored.file_meta.TransferSyntaxUID == syntax
        expected = pydicom.dcmread(original).pixel_array
        assert np.array_equal(stored.pixel_array, expected)
