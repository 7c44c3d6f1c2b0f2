"""C-STORE sending against pynetdicom's own Storage SCP on 127.0.0.1 (ephemeral ports only)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    UID,
    generate_uid,
)
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt, transport

from dicom_io.errors import DicomIOError
from dicom_io.send import (
    Destination,
    DestinationError,
    describe_status,
    parse_destination,
    send_files,
)

ARCHIVE = Path(__file__).resolve().parents[2] / "sample_data" / "archive"
SCP_AE = "TEST_SCP"


@dataclass
class FakePacs:
    """A running in-process Storage SCP and what it received."""

    port: int
    folder: Path
    stored: list[Path] = field(default_factory=list)
    syntaxes: list[str] = field(default_factory=list)
    requested: list[list[tuple[str, tuple[str, ...]]]] = field(default_factory=list)
    calls: int = 0

    @property
    def destination(self) -> Destination:
        return Destination(SCP_AE, "127.0.0.1", self.port)


StartPacs = Callable[..., FakePacs]


@pytest.fixture
def start_pacs(tmp_path: Path) -> Iterator[StartPacs]:
    """``start_pacs(statuses=, delays=, require_calling_aet=, transfer_syntaxes=)`` -> an SCP.

    ``statuses[i]`` / ``delays[i]`` are the status returned / seconds slept on the i-th C-STORE
    (then 0x0000 / 0 s); only successful stores are written to disk.
    """
    servers: list[Any] = []

    def _start(
        statuses: list[int] | None = None,
        delays: list[float] | None = None,
        require_calling_aet: list[str] | None = None,
        transfer_syntaxes: list[str] | None = None,
    ) -> FakePacs:
        pacs = FakePacs(port=0, folder=tmp_path / f"pacs{len(servers)}")
        pacs.folder.mkdir()
        lock = threading.Lock()

        def on_store(event: Any) -> int:
            with lock:
                call = pacs.calls
                pacs.calls += 1
                pacs.requested.append(
                    [
                        (str(cx.abstract_syntax), tuple(str(t) for t in cx.transfer_syntax))
                        for cx in event.assoc.requestor.requested_contexts
                    ]
                )
            if delays and call < len(delays):
                time.sleep(delays[call])
            status = statuses[call] if statuses and call < len(statuses) else 0x0000
            if status == 0x0000:
                target = pacs.folder / f"{event.request.AffectedSOPInstanceUID}.dcm"
                target.write_bytes(event.encoded_dataset())
                with lock:
                    pacs.stored.append(target)
                    pacs.syntaxes.append(str(event.context.transfer_syntax))
            return status

        ae = AE(ae_title=SCP_AE)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(
                str(cx.abstract_syntax), transfer_syntaxes or ALL_TRANSFER_SYNTAXES
            )
        if require_calling_aet:
            ae.require_calling_aet = require_calling_aet
        server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )
        if server is None:  # only a blocking server returns None
            raise RuntimeError("pynetdicom did not start the test SCP")
        servers.append(server)
        pacs.port = int(server.server_address[1])
        return pacs

    yield _start
    for server in servers:
        server.shutdown()


def write_sr(
    folder: Path, name: str, syntax: str = ExplicitVRLittleEndian,
    sop_class: str = ComprehensiveSRStorage,
) -> Path:
    """A small Comprehensive SR-like dataset (root container + one text item) as a Part 10 file."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.SOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "TEST^SEND", "PID-S", "SR"
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator = "126000", "DCM"
    title.CodeMeaning = "Imaging Measurement Report"
    ds.ConceptNameCodeSequence = [title]
    text = Dataset()
    text.RelationshipType, text.ValueType, text.TextValue = "CONTAINS", "TEXT", "no fracture"
    ds.ContentSequence = [text]
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def archive_files() -> dict[str, Path]:
    """One sample-archive image per transfer syntax (JPEG 2000, RLE, explicit VR LE)."""
    found: dict[str, Path] = {}
    for path in sorted(ARCHIVE.rglob("*.dcm")):
        syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        found.setdefault(syntax, path)
    wanted = (JPEG2000Lossless, RLELossless, ExplicitVRLittleEndian)
    if not all(s in found for s in wanted):
        pytest.skip(f"sample_data/archive lacks one of {wanted}")
    return {s: found[s] for s in wanted}


def free_port() -> int:
    """A loopback port nothing listens on (bound then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- parse_destination -------------------------------------------------------------------------


def test_parse_destination_accepts_the_documented_forms() -> None:
    assert parse_destination("PACS@pacs.example.org:104") == Destination(
        "PACS", "pacs.example.org", 104
    )
    assert parse_destination("MY AE@10.0.0.5:11112") == Destination("MY AE", "10.0.0.5", 11112)
    v6 = parse_destination("ORTHANC@[::1]:4242")
    assert (v6.host, v6.port, str(v6)) == ("::1", 4242, "ORTHANC@[::1]:4242")
    assert str(parse_destination("A@h:1")) == "A@h:1"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "pacs.example.org:104",
            "Destination 'pacs.example.org:104' is not of the form AET@HOST:PORT "
            "(e.g. PACS@pacs.example.org:104)",
        ),
        ("PACS@host", "Destination 'PACS@host' is not of the form AET@HOST:PORT "
         "(e.g. PACS@pacs.example.org:104)"),
        ("@host:104", "Destination '@host:104' is not of the form AET@HOST:PORT "
         "(e.g. PACS@pacs.example.org:104)"),
        ("PACS@:104", "Destination 'PACS@:104' is not of the form AET@HOST:PORT "
         "(e.g. PACS@pacs.example.org:104)"),
        (
            "ABCDEFGHIJKLMNOPQ@host:104",
            "Destination 'ABCDEFGHIJKLMNOPQ@host:104': AE title 'ABCDEFGHIJKLMNOPQ' has 17 "
            "characters; an AE title has 1 to 16 characters",
        ),
        (
            "A\\B@host:104",
            "Destination 'A\\\\B@host:104': AE title 'A\\\\B' contains a backslash or a control "
            "character, which an AE title cannot hold",
        ),
        (
            "   @host:104",
            "Destination '   @host:104': AE title '   ' is empty; an AE title has 1 to 16 "
            "characters",
        ),
        ("PACS@host:0", "Destination 'PACS@host:0': port '0' is not a number from 1 to 65535"),
        (
            "PACS@host:65536",
            "Destination 'PACS@host:65536': port '65536' is not a number from 1 to 65535",
        ),
        ("PACS@host:x1", "Destination 'PACS@host:x1': port 'x1' is not a number from 1 to 65535"),
        ("PACS@my host:104", "Destination 'PACS@my host:104': host 'my host' contains spaces"),
    ],
    ids=["no-aet", "no-port", "empty-aet", "empty-host", "aet-17", "backslash", "blank-aet",
         "port-0", "port-big", "port-text", "host-space"],
)
def test_parse_destination_errors_name_the_value_and_the_form(value: str, message: str) -> None:
    with pytest.raises(DestinationError) as info:
        parse_destination(value)
    assert str(info.value) == message
    assert info.value.reason == "bad-destination"
    assert isinstance(info.value, DicomIOError)


def test_destination_validates_its_fields() -> None:
    with pytest.raises(DestinationError, match="port 70000 is not from 1 to 65535"):
        Destination("PACS", "host", 70000)
    with pytest.raises(DestinationError, match="AE title 'A\\\\tB' contains a backslash"):
        Destination("A\tB", "host", 104)


def test_bad_options_raise_before_any_network(tmp_path: Path) -> None:
    dest = Destination("PACS", "127.0.0.1", 104)
    with pytest.raises(DestinationError, match="calling_ae 'CALLING_AE_TOO_LONG' has 19"):
        send_files([], dest, calling_ae="CALLING_AE_TOO_LONG")
    with pytest.raises(DicomIOError, match=r"retries=-1 must be an integer >= 0"):
        send_files([], dest, retries=-1)
    with pytest.raises(DicomIOError, match=r"timeout_s=0 must be a number of seconds > 0"):
        send_files([], dest, timeout_s=0)


def test_describe_status() -> None:
    assert describe_status(0x0000) == "0x0000 success"
    assert describe_status(0xB000) == "0xB000 warning (stored)"
    assert describe_status(0xA702) == "0xA702 out of resources (transient)"
    assert describe_status(0xC211) == "0xC211 cannot understand"
    assert describe_status(0x0122) == "0x0122 SOP class not supported"
    assert describe_status(None) == "no status"


def test_pynetdicom_logs_are_quiet_by_default() -> None:
    assert logging.getLogger("pynetdicom").getEffectiveLevel() >= logging.WARNING


# --- against a real SCP ------------------------------------------------------------------------


def test_sends_srs_and_compressed_images_over_one_association(
    start_pacs: StartPacs, tmp_path: Path, archive_files: dict[str, Path]
) -> None:
    pacs = start_pacs()
    srs = [write_sr(tmp_path, f"sr{i}.dcm") for i in range(2)]
    implicit_sr = write_sr(tmp_path, "sr_implicit.dcm", ImplicitVRLittleEndian)
    paths = [*srs, implicit_sr, *archive_files.values()]

    results = send_files(paths, pacs.destination, retries=0, timeout_s=10)

    assert [r.path for r in results] == paths
    assert all(r.ok and r.status == 0 and r.attempts == 1 and r.error == "" for r in results)
    for result, path in zip(results, paths):
        assert result.sop_instance_uid == str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    # every file arrived, compressed ones in their own transfer syntax, pixels intact
    by_uid = {dcmread(p).SOPInstanceUID: p for p in pacs.stored}
    assert set(by_uid) == {r.sop_instance_uid for r in results}
    for syntax, source in archive_files.items():
        original = dcmread(source)
        received = dcmread(by_uid[original.SOPInstanceUID])
        assert received.file_meta.TransferSyntaxUID == syntax
        assert received.PixelData == original.PixelData
    assert JPEG2000Lossless in pacs.syntaxes and RLELossless in pacs.syntaxes
    # one association for the batch; one context per (SOP class, transfer syntax) present, each
    # offering only that syntax, plus an Implicit VR fallback for the SOP classes sent in Explicit
    assert all(req == pacs.requested[0] for req in pacs.requested)
    assert all(len(syntaxes) == 1 for _, syntaxes in pacs.requested[0])
    proposed = [(cls, syntaxes[0]) for cls, syntaxes in pacs.requested[0]]
    present = {
        (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
        for ds in (dcmread(p, stop_before_pixels=True) for p in paths)
    }
    fallbacks = {(cls, ImplicitVRLittleEndian) for cls, s in present if s == ExplicitVRLittleEndian}
    assert len(proposed) == len(set(proposed)) == len(present | fallbacks)
    assert set(proposed) == present | fallbacks


def test_peer_without_a_syntax_fails_those_files_and_takes_the_rest(
    start_pacs: StartPacs, tmp_path: Path, archive_files: dict[str, Path]
) -> None:
    pacs = start_pacs(transfer_syntaxes=[ImplicitVRLittleEndian])
    sr = write_sr(tmp_path, "explicit.dcm")
    j2k = archive_files[JPEG2000Lossless]
    results = send_files([j2k, sr], pacs.destination, retries=2, backoff_s=0.01, timeout_s=10)
    assert (results[0].ok, results[0].status, results[0].attempts) == (False, None, 1)
    assert results[0].error.startswith(f"not sendable to {pacs.destination}: No presentation")
    assert "JPEG 2000" in results[0].error
    # the Explicit VR SR went through the Implicit VR fallback context, converted
    assert (results[1].ok, results[1].attempts) == (True, 1)
    (stored,) = pacs.stored
    assert dcmread(stored).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert dcmread(stored).SOPInstanceUID == results[1].sop_instance_uid


def test_more_than_128_contexts_are_split_over_associations(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    classes = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts][:70]
    # 70 SOP classes in Explicit VR: 70 exact + 70 Implicit VR fallback contexts = 140 > 128
    paths = [write_sr(tmp_path, f"c{i}.dcm", sop_class=c) for i, c in enumerate(classes)]
    pacs = start_pacs()
    # 30 s, not 10: 70 stores to an in-process SCP once missed a 10 s DIMSE reply on a loaded machine
    results = send_files(paths, pacs.destination, retries=0, timeout_s=30)
    assert all(r.ok for r in results) and len(pacs.stored) == 70
    associations = {tuple(req) for req in pacs.requested}
    assert len(associations) == 2
    assert all(len(req) <= 128 for req in associations)
    assert sum(len(req) for req in associations) == 140


def test_unreadable_files_are_failed_results_and_the_rest_is_sent(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    pacs = start_pacs()
    good = write_sr(tmp_path, "good.dcm")
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM")
    missing = tmp_path / "gone.dcm"
    results = send_files([text, good, missing], pacs.destination, retries=0, timeout_s=10)
    assert [r.ok for r in results] == [False, True, False]
    assert [r.attempts for r in results] == [0, 1, 0]
    assert results[0].error.startswith("unreadable: InvalidDicomError")
    assert results[2].error.startswith("unreadable: FileNotFoundError")
    assert results[0].sop_instance_uid == "" and results[0].status is None
    assert len(pacs.stored) == 1


def test_refused_association_is_retried_then_fails_in_bounded_time(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    pacs = start_pacs(require_calling_aet=["SOMEONE_ELSE"])
    paths = [write_sr(tmp_path, "a.dcm"), write_sr(tmp_path, "b.dcm")]
    started = time.monotonic()
    results = send_files(paths, pacs.destination, retries=2, backoff_s=0.05, timeout_s=5)
    elapsed = time.monotonic() - started
    assert all(not r.ok and r.attempts == 3 and r.status is None for r in results)
    assert results[0].error.startswith(f"association rejected by {pacs.destination} (")
    assert "Calling AE title not recognised" in results[0].error
    assert 0.05 + 0.1 <= elapsed < 5, "backoff 0.05 s then 0.1 s, no hang"
    assert pacs.calls == 0


def test_rejection_is_named_even_when_pynetdicom_loses_the_race(
    start_pacs: StartPacs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pynetdicom 3 can close the socket on an A-ASSOCIATE-RJ before the requesting thread
    looks (seen with Orthanc under load); the rejection must still be reported as such."""

    class LateEvent(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            result = super().wait(timeout)
            time.sleep(0.3)  # let the DUL thread read the rejection and close first
            return result

    original_init = transport.AssociationSocket.__init__

    def init(self: transport.AssociationSocket, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._ready = LateEvent()

    monkeypatch.setattr(transport.AssociationSocket, "__init__", init)
    pacs = start_pacs(require_calling_aet=["SOMEONE_ELSE"])
    (result,) = send_files([write_sr(tmp_path, "a.dcm")], pacs.destination, retries=0)
    assert (result.ok, result.attempts) == (False, 1)
    assert "Calling AE title not recognised" in result.error, result.error


def test_unreachable_port_fails_quickly(tmp_path: Path) -> None:
    dest = Destination("NOBODY", "127.0.0.1", free_port())
    started = time.monotonic()
    results = send_files([write_sr(tmp_path, "a.dcm")], dest, retries=1, backoff_s=0.01)
    assert time.monotonic() - started < 3
    (result,) = results
    assert (result.ok, result.status, result.attempts) == (False, None, 2)
    assert result.error == (
        f"no association with {dest}: connection refused, unreachable or no answer within 30 s"
    )


def test_failure_status_is_final(start_pacs: StartPacs, tmp_path: Path) -> None:
    pacs = start_pacs(statuses=[0xC211])
    paths = [write_sr(tmp_path, "a.dcm"), write_sr(tmp_path, "b.dcm")]
    results = send_files(paths, pacs.destination, retries=3, backoff_s=0.01, timeout_s=10)
    assert (results[0].ok, results[0].status, results[0].attempts) == (False, 0xC211, 1)
    assert results[0].error == f"{pacs.destination} answered 0xC211 cannot understand"
    assert (results[1].ok, results[1].status, results[1].attempts) == (True, 0, 1)
    assert pacs.calls == 2


def test_transient_status_is_retried_until_stored(start_pacs: StartPacs, tmp_path: Path) -> None:
    pacs = start_pacs(statuses=[0x0000, 0xA702, 0xA700])
    paths = [write_sr(tmp_path, "a.dcm"), write_sr(tmp_path, "b.dcm")]
    results = send_files(paths, pacs.destination, retries=3, backoff_s=0.01, timeout_s=10)
    assert [(r.ok, r.status, r.attempts) for r in results] == [(True, 0, 1), (True, 0, 3)]
    assert len(pacs.stored) == 2 and pacs.calls == 4


def test_transient_status_gives_up_after_retries(start_pacs: StartPacs, tmp_path: Path) -> None:
    pacs = start_pacs(statuses=[0xA700] * 10)
    results = send_files([write_sr(tmp_path, "a.dcm")], pacs.destination, retries=2,
                         backoff_s=0.01, timeout_s=10)
    assert [(r.ok, r.status, r.attempts) for r in results] == [(False, 0xA700, 3)]
    assert "out of resources (transient)" in results[0].error
    assert pacs.calls == 3


def test_dimse_timeout_aborts_and_retries_on_a_new_association(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    # The one timeout also caps the retry's association: 1 s, not less, so a loaded CI machine
    # negotiates it in time (0.3 s was missed once); the first answer is 3 s late, and the send
    # is done before it would have come.
    pacs = start_pacs(delays=[3.0])
    paths = [write_sr(tmp_path, "a.dcm"), write_sr(tmp_path, "b.dcm")]
    started = time.monotonic()
    results = send_files(paths, pacs.destination, retries=1, backoff_s=0.01, timeout_s=1.0)
    assert time.monotonic() - started < 3.0
    # the first try timed out (and lost the association for the second file): both resent
    assert [(r.ok, r.status, r.attempts) for r in results] == [(True, 0, 2), (True, 0, 2)]
