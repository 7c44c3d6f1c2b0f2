"""Send DICOM files (the run's SR, GSPS, SC, rejection notes...) to a PACS by C-STORE, with retries.

A nightly run must never hang on a PACS that is down and must never lose track of what it
sent, so :func:`send_files` never raises for a file or a network problem: each file gets a
:class:`SendResult` (stored or not, the peer's status, how many tries, why it failed) that the
runner records in its ledger and can retry on the next night.

Transport choices (DICOM PS3.7 / PS3.8, pynetdicom 3):

- One association for the batch, proposing one presentation context per (SOP class, transfer
  syntax) actually present in the files, each offering only that syntax: a compressed file
  (JPEG 2000, RLE, ...) can only be sent in a context for its own syntax (it is never
  decompressed here). A native Explicit VR file adds one fallback context per SOP class in
  Implicit VR Little Endian, which every SCP accepts. More than 128 contexts (the protocol's
  limit) are split over several associations.
- Timeouts on TCP connect, ACSE, DIMSE and the network, so no call can block forever.
- Retried, with exponential backoff (``backoff_s``, ``2 * backoff_s``, ...): a failed
  association (refused, rejected, aborted, no answer), a lost association or a DIMSE timeout
  (no status), and the *transient* failure statuses in :data:`TRANSIENT_STATUSES`
  (``0xA700``-``0xA7FF`` "Refused: out of resources", ``0x0213`` "Resource limitation").
  Every other failure status (``0xA9xx`` data set does not match the SOP class, ``0xCxxx``
  cannot understand, ``0x0122`` SOP class not supported, ``0x0124`` not authorised, ...) is
  final: sending the same bytes again cannot succeed.
- Warning statuses (``0xB000``, ``0xB006``, ``0xB007``, ``0x0001``) mean the peer stored the
  instance: the result is ``ok`` and keeps the status.
- DICOM TLS (PS3.15 B.1, the "secure transport connection" profile): with a ``tls``
  :class:`ssl.SSLContext` (:func:`tls_context`) every association runs over TLS 1.2 or later;
  the peer's certificate is checked against the given CA and the destination's host name, and a
  client certificate is presented when the PACS asks for one. A handshake that fails (an
  untrusted or mismatched certificate, on either side) is a failed association, retried like one.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import ImplicitVRLittleEndian, UID
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ASSOCIATE

from dicom_io.deflate import read_header
from dicom_io.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_CALLING_AE",
    "TRANSIENT_STATUSES",
    "Destination",
    "DestinationError",
    "SendResult",
    "describe_status",
    "parse_destination",
    "send_files",
    "tls_context",
]

LOGGER = logging.getLogger(__name__)

# pynetdicom logs every PDU at INFO; keep it quiet unless the application configured it.
_PYNETDICOM_LOGGER = logging.getLogger("pynetdicom")
if _PYNETDICOM_LOGGER.level == logging.NOTSET:
    _PYNETDICOM_LOGGER.setLevel(logging.WARNING)

#: The AE title the screener calls with unless the site config names another.
DEFAULT_CALLING_AE = "FRACTURE_SCREEN"

#: Failure statuses worth another try, as inclusive ranges: the peer may have room later.
#: 0xA700-0xA7FF "Refused: out of resources" (PS3.4 B.2.3), 0x0213 "Resource limitation"
#: (PS3.7 C.5). Every other failure status is final.
TRANSIENT_STATUSES: tuple[tuple[int, int], ...] = ((0xA700, 0xA7FF), (0x0213, 0x0213))

_MAX_CONTEXTS = 128  # presentation contexts one association can propose (PS3.8 9.3.2.2)
_MAX_BACKOFF_S = 60.0
_DESTINATION_FORM = "AET@HOST:PORT (e.g. PACS@pacs.example.org:104)"


class DestinationError(InvalidArgumentError):
    """A destination string (``--send-to``) or AE title is malformed; the message says the form."""

    reason = "bad-destination"


@dataclass(frozen=True, slots=True)
class Destination:
    """Where to send: the peer's (called) AE title, host name or address, and TCP port."""

    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        problem = _ae_title_problem(self.ae_title)
        if problem:
            raise DestinationError(f"Destination AE title {self.ae_title!r} {problem}")
        if not self.host or any(ch.isspace() for ch in self.host):
            raise DestinationError(
                f"Destination host {self.host!r} is empty or contains spaces; give a host "
                "name or an IP address"
            )
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise DestinationError(f"Destination port {self.port!r} is not an integer")
        if not 1 <= self.port <= 65535:
            raise DestinationError(f"Destination port {self.port} is not from 1 to 65535")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SendResult:
    """What happened to one file.

    Attributes:
        path: the file as given.
        sop_instance_uid: its SOP Instance UID ("" when the file could not be read).
        ok: the peer stored it (success or a warning status).
        status: the peer's last C-STORE status, ``None`` when none came back (unreadable file,
            no association, no presentation context, timeout).
        attempts: how many times it was offered to the peer (0 when it was never sendable);
            a failed association counts as an attempt for every file it was meant to carry.
        error: why it failed (or "" when ``ok``); safe to log (no patient data).
    """

    path: Path
    sop_instance_uid: str
    ok: bool
    status: int | None
    attempts: int
    error: str


def parse_destination(value: str) -> Destination:
    """Parse ``AET@HOST:PORT`` (``AET@[::1]:PORT`` for IPv6) into a :class:`Destination`.

    Raises:
        DestinationError: the value is not of that form, or the AE title or port is invalid;
            the message quotes the value and the expected form.
    """
    text = str(value)
    ae_title, at, rest = text.rpartition("@")
    host, port_text = "", ""
    if rest.startswith("["):
        closing = rest.find("]")
        if closing > 0 and rest[closing + 1 : closing + 2] == ":":
            host, port_text = rest[1:closing], rest[closing + 2 :]
    else:
        host, _, port_text = rest.rpartition(":")
    if not at or not ae_title or not host or not port_text:
        raise DestinationError(f"Destination {text!r} is not of the form {_DESTINATION_FORM}")
    problem = _ae_title_problem(ae_title)
    if problem:
        raise DestinationError(f"Destination {text!r}: AE title {ae_title!r} {problem}")
    if any(ch.isspace() for ch in host):
        raise DestinationError(f"Destination {text!r}: host {host!r} contains spaces")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise DestinationError(
            f"Destination {text!r}: port {port_text!r} is not a number from 1 to 65535"
        )
    return Destination(ae_title=ae_title.strip(), host=host, port=int(port_text))


def describe_status(status: int | None) -> str:
    """A short text for a C-STORE status, for logs and the ledger."""
    if status is None:
        return "no status"
    code = f"0x{status:04X}"
    if status == 0x0000:
        return f"{code} success"
    if status in (0x0001, 0xB000, 0xB006, 0xB007):
        return f"{code} warning (stored)"
    if _is_transient(status):
        return f"{code} out of resources (transient)"
    if 0xA900 <= status <= 0xA9FF:
        return f"{code} data set does not match SOP class"
    if 0xC000 <= status <= 0xCFFF:
        return f"{code} cannot understand"
    known = {
        0x0117: "invalid SOP instance",
        0x0122: "SOP class not supported",
        0x0124: "not authorised",
        0x0210: "duplicate invocation",
        0x0211: "unrecognised operation",
        0x0212: "mistyped argument",
    }
    return f"{code} {known.get(status, 'failure')}"


@dataclass(slots=True)
class _Item:
    """A readable file waiting to be sent, and what the last try said."""

    index: int
    path: Path
    sop_class: UID
    sop_instance: str
    transfer_syntax: UID
    attempts: int = 0
    status: int | None = None
    error: str = ""


def tls_context(
    *,
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
    verify: bool = True,
) -> ssl.SSLContext:
    """A client :class:`ssl.SSLContext` for DICOM TLS (TLS 1.2 or later).

    Args:
        ca_file: PEM CA certificate(s) the PACS's certificate must chain to; ``None``: the
            system's trusted CAs.
        cert_file: PEM client certificate, for a PACS that requires one; with ``key_file``.
        key_file: PEM private key of ``cert_file`` (unencrypted).
        verify: check the peer's certificate and host name; ``False`` only for a test PACS.

    Raises:
        InvalidArgumentError: a file that cannot be read as PEM, or a key that does not match
            its certificate; the message names the file.
    """
    if (cert_file is None) != (key_file is None):
        raise InvalidArgumentError("a TLS client certificate needs its key: give cert_file and key_file together")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ca_file is not None:
            context.load_verify_locations(cafile=str(ca_file))
        if cert_file is not None:
            context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    except (OSError, ssl.SSLError) as exc:
        which = f"ca_file {str(ca_file)!r}" if cert_file is None else (
            f"ca_file {str(ca_file)!r}, cert_file {str(cert_file)!r} or key_file {str(key_file)!r}")
        raise InvalidArgumentError(f"cannot use the TLS files ({which}): {exc}; give readable PEM files, the "
                                   "key matching the certificate") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def send_files(
    paths: Iterable[str | Path],
    destination: Destination,
    *,
    calling_ae: str = DEFAULT_CALLING_AE,
    retries: int = 3,
    backoff_s: float = 1.0,
    timeout_s: float = 30.0,
    tls: ssl.SSLContext | None = None,
) -> list[SendResult]:
    """C-STORE every file to ``destination``; one :class:`SendResult` per path, in order.

    Never raises for a file or the network: an unreadable file, a refused association or a
    failure status is a failed result. Worst-case time is bounded by ``(retries + 1)`` rounds
    of (connect + association + one DIMSE exchange per file), each capped by ``timeout_s``,
    plus the backoff sleeps.

    Args:
        paths: DICOM files with file meta (Part 10), any storage SOP class and transfer syntax.
        destination: the peer, e.g. from :func:`parse_destination`.
        calling_ae: our AE title; the PACS must know it (1..16 characters).
        retries: further tries after the first for association failures, lost associations,
            timeouts and transient statuses (:data:`TRANSIENT_STATUSES`).
        backoff_s: sleep before the first retry, doubled before each next one (capped at 60 s).
        timeout_s: limit in seconds for the TCP connect, association negotiation, each
            DIMSE response and network inactivity.
        tls: DICOM TLS with this context (:func:`tls_context`); the destination's host is the
            name its certificate must carry. ``None``: plain TCP.

    Raises:
        InvalidArgumentError: a bad ``calling_ae``, ``retries``, ``backoff_s`` or ``timeout_s``
            (a configuration mistake, not a send failure).
    """
    _check_options(calling_ae, retries, backoff_s, timeout_s)
    path_list = [Path(p) for p in paths]
    results: list[SendResult | None] = [None] * len(path_list)
    items: list[_Item] = []
    for index, path in enumerate(path_list):
        item_or_error = _read_item(index, path)
        if isinstance(item_or_error, str):
            results[index] = SendResult(path, "", False, None, 0, item_or_error)
        else:
            items.append(item_or_error)

    for group in _context_groups(items):
        _send_group(group, destination, calling_ae.strip(), retries, backoff_s, timeout_s, tls)
        for item in group:
            ok = item.status is not None and _is_stored(item.status)
            results[item.index] = SendResult(
                item.path, item.sop_instance, ok, item.status, item.attempts,
                "" if ok else item.error,
            )
    final = [r for r in results if r is not None]
    n_ok = sum(r.ok for r in final)
    LOGGER.info("sent %d of %d file(s) to %s", n_ok, len(final), destination)
    for r in final:
        if not r.ok:
            LOGGER.warning(
                "not sent to %s: %s (SOP instance %s, %d attempt(s)): %s",
                destination, r.path, r.sop_instance_uid or "?", r.attempts, r.error,
            )
    return final


def _send_group(
    items: list[_Item],
    destination: Destination,
    calling_ae: str,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Send ``items`` (at most 128 contexts' worth) in rounds until done or out of retries."""
    pending = list(items)
    for round_index in range(retries + 1):
        if not pending:
            return
        if round_index:
            time.sleep(min(backoff_s * 2 ** (round_index - 1), _MAX_BACKOFF_S))
        pending = _send_round(pending, destination, calling_ae, timeout_s, tls)


def _send_round(
    pending: list[_Item], destination: Destination, calling_ae: str, timeout_s: float,
    tls: ssl.SSLContext | None = None,
) -> list[_Item]:
    """One association over ``pending``; returns the items worth another try."""
    ae = AE(ae_title=calling_ae)
    for value in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
        setattr(ae, value, timeout_s)
    for sop_class, syntax in _requested_contexts(pending):
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(
        destination.host, destination.port, ae_title=destination.ae_title,
        evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)],
        tls_args=(tls, destination.host) if tls is not None else None,
    )
    retry: list[_Item] = []
    try:
        if not assoc.is_established:
            reason = _association_failure(assoc, destination, timeout_s, tls=tls is not None)
            for item in pending:
                item.attempts += 1
                item.status, item.error = None, reason
            return list(pending)
        for position, item in enumerate(pending):
            if not assoc.is_established:
                for rest in pending[position:]:
                    rest.attempts += 1
                    rest.status = None
                    rest.error = f"association with {destination} lost before this file"
                retry.extend(pending[position:])
                break
            item.attempts += 1
            if _store_one(assoc, item, destination, timeout_s):
                retry.append(item)
        return retry
    finally:
        if assoc.is_established:
            assoc.release()
        elif not (assoc.is_aborted or assoc.is_rejected or assoc.is_released):
            assoc.abort()
        ae.shutdown()


def _no_delay(event: evt.Event) -> None:
    """Turn off Nagle's algorithm on our socket once connected.

    pynetdicom writes each PDU in pieces; with Nagle on, every C-STORE waits for the peer's
    delayed ACK (measured on loopback: 57 ms a store, 13 ms with TCP_NODELAY).
    """
    try:
        sock = event.assoc.dul.socket.socket  # type: ignore[union-attr]
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):  # pragma: no cover - a speed-up only
        pass


def _store_one(assoc: Association, item: _Item, destination: Destination, timeout_s: float) -> bool:
    """C-STORE one file on ``assoc``; record the outcome in ``item``; True when worth a retry."""
    try:
        rsp = assoc.send_c_store(item.path)
    except (ValueError, AttributeError) as exc:  # no accepted context, or cannot encode
        item.status, item.error = None, f"not sendable to {destination}: {exc}"
        return False
    except RuntimeError as exc:  # the association went down between the check and the call
        item.status, item.error = None, f"association with {destination} lost: {exc}"
        return True
    except Exception as exc:  # noqa: BLE001 - the file changed since read, or cannot be decoded
        # one bad file must be a failed row, never the end of the whole batch
        item.status = None
        item.error = f"cannot send {item.path.name}: {type(exc).__name__}: {exc}"
        return False
    status = rsp.get("Status") if rsp is not None else None
    if status is None:
        item.status = None
        item.error = (
            f"no C-STORE response from {destination} within {timeout_s:g} s "
            "or the association was aborted"
        )
        return True
    item.status = int(status)
    if _is_stored(item.status):
        item.error = ""
        return False
    item.error = f"{destination} answered {describe_status(item.status)}"
    return _is_transient(item.status)


def _association_failure(assoc: Association, destination: Destination, timeout_s: float, *,
                         tls: bool = False) -> str:
    """Why no association came up, in words, from what pynetdicom recorded."""
    primitive = assoc.acceptor.primitive or _unread_rejection(assoc)
    if primitive is not None and primitive.result in (0x01, 0x02):
        return (
            f"association rejected by {destination} ({primitive.result_str}, "
            f"source: {primitive.source_str}, reason: {primitive.reason_str})"
        )
    if primitive is None and tls:
        return (
            f"no association with {destination} over TLS: the TLS handshake failed (the peer's certificate "
            "is not signed by [send] ca_file or names another host, or the peer refused our certificate), "
            f"or the connection was refused or not answered within {timeout_s:g} s"
        )
    if primitive is None:
        return (
            f"no association with {destination}: connection refused, unreachable or no "
            f"answer within {timeout_s:g} s"
        )
    if assoc.is_aborted and not assoc.accepted_contexts:
        return f"{destination} accepted none of the proposed presentation contexts"
    return f"association with {destination} aborted"


def _unread_rejection(assoc: Association) -> A_ASSOCIATE | None:
    """An A-ASSOCIATE-RJ the peer sent but pynetdicom left unread in its queue.

    pynetdicom 3 races when a peer rejects and closes at once (Orthanc does): its DUL thread
    may read the rejection and see the socket close before the requesting thread checks the
    connection, which then gives up without reading the answer. The answer is still queued.
    """
    try:
        queued = list(assoc.dul.to_user_queue.queue)
    except AttributeError:  # pragma: no cover - another pynetdicom layout
        return None
    for primitive in queued:
        if isinstance(primitive, A_ASSOCIATE) and primitive.result in (0x01, 0x02):
            return primitive
    return None


def _read_item(index: int, path: Path) -> _Item | str:
    """Header of one file (what to propose), or the reason it cannot be sent."""
    try:
        ds = read_header(path, specific_tags=["SOPClassUID", "SOPInstanceUID"])  # bounded, deflated too
    except Exception as exc:  # noqa: BLE001 - any reader failure makes a failed row, not a crash
        return f"unreadable: {type(exc).__name__}: {exc}"
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    sop_class = ds.get("SOPClassUID") or getattr(meta, "MediaStorageSOPClassUID", None)
    sop_instance = ds.get("SOPInstanceUID") or getattr(meta, "MediaStorageSOPInstanceUID", None)
    missing = [
        name
        for name, present in (
            ("TransferSyntaxUID", syntax),
            ("SOPClassUID", sop_class),
            ("SOPInstanceUID", sop_instance),
        )
        if not present
    ]
    if missing:
        return f"not sendable: missing {', '.join(missing)} (needs a DICOM Part 10 file)"
    return _Item(index, path, UID(str(sop_class)), str(sop_instance), UID(str(syntax)))


def _contexts_for(item: _Item) -> list[tuple[str, str]]:
    """Presentation contexts (SOP class, transfer syntax) that ``item`` needs, its own first.

    A native little-endian file that is not Implicit VR also gets a fallback context in
    Implicit VR Little Endian, the default every SCP must accept (PS3.5 10.1): pynetdicom uses
    the exact syntax when the peer accepts it and converts otherwise. Compressed files are
    never converted (that would mean decompressing), so they get only their own syntax.
    """
    sop_class, syntax = str(item.sop_class), item.transfer_syntax
    needed = [(sop_class, str(syntax))]
    if not syntax.is_compressed and syntax.is_little_endian and syntax != ImplicitVRLittleEndian:
        needed.append((sop_class, str(ImplicitVRLittleEndian)))
    return needed


def _context_groups(items: list[_Item]) -> list[list[_Item]]:
    """Split ``items`` so that no group needs more than 128 presentation contexts."""
    groups: list[list[_Item]] = []
    contexts: list[set[tuple[str, str]]] = []
    group_of: dict[tuple[str, str], int] = {}
    for item in items:
        key = (str(item.sop_class), str(item.transfer_syntax))
        if key not in group_of:
            needed = set(_contexts_for(item))
            if not groups or len(contexts[-1] | needed) > _MAX_CONTEXTS:
                groups.append([])
                contexts.append(set())
            contexts[-1] |= needed
            group_of[key] = len(groups) - 1
        groups[group_of[key]].append(item)
    return groups


def _requested_contexts(items: Sequence[_Item]) -> list[tuple[str, str]]:
    """The distinct contexts ``items`` need, in first-seen order."""
    ordered: dict[tuple[str, str], None] = {}
    for item in items:
        ordered.update(dict.fromkeys(_contexts_for(item)))
    return list(ordered)


def _is_stored(status: int) -> bool:
    return status in (0x0000, 0x0001, 0xB000, 0xB006, 0xB007)


def _is_transient(status: int) -> bool:
    return any(low <= status <= high for low, high in TRANSIENT_STATUSES)


def _ae_title_problem(value: object) -> str:
    """Why ``value`` is not a valid AE title (PS3.5 6.2, VR AE), or "" when it is."""
    if not isinstance(value, str):
        return "is not text"
    stripped = value.strip(" ")
    if not stripped:
        return "is empty; an AE title has 1 to 16 characters"
    if len(stripped) > 16:
        return f"has {len(stripped)} characters; an AE title has 1 to 16 characters"
    if "\\" in value or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return "contains a backslash or a control character, which an AE title cannot hold"
    if any(ord(ch) > 126 for ch in value):
        return "contains a non-ASCII character, which an AE title cannot hold"
    return ""


def _check_options(calling_ae: str, retries: int, backoff_s: float, timeout_s: float) -> None:
    problem = _ae_title_problem(calling_ae)
    if problem:
        raise DestinationError(f"calling_ae {calling_ae!r} {problem}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidArgumentError(f"retries={retries!r} must be an integer >= 0 (e.g. 3)")
    if not backoff_s >= 0:
        raise InvalidArgumentError(f"backoff_s={backoff_s!r} must be a number of seconds >= 0")
    if not timeout_s > 0:
        raise InvalidArgumentError(f"timeout_s={timeout_s!r} must be a number of seconds > 0")
