"""Where pynetdicom streams a received C-STORE dataset.

With ``_config.STORE_RECV_CHUNKED_DATASET`` pynetdicom writes each dataset
(preamble, file meta, then every P-DATA fragment, calling ``.file.flush()``
after each) to a ``tempfile.NamedTemporaryFile`` in the system's temporary
folder (``DIMSEMessage.decode_msg``).  Here a factory set with :func:`use`
makes that file instead (the gateway: one on the spool's file system, so
the handler keeps it by a link and has its hash without reading it back).
With no factory, pynetdicom's NamedTemporaryFile as before.
"""

from __future__ import annotations

from pathlib import Path
from tempfile import NamedTemporaryFile
from typing import Callable

from dicomext.guard import Mirror, Patch, Replacement

_factory: Callable[[], object] | None = None


def use(factory: Callable[[], object] | None) -> None:
    """Have received C-STORE datasets written to ``factory()`` (None: a NamedTemporaryFile)."""
    global _factory
    _factory = factory


def _incoming_file(*args, **kwargs):
    factory = _factory
    if factory is None:
        return NamedTemporaryFile(*args, **kwargs)
    return factory()


def received_file(request) -> object | None:
    """The file object a C-STORE request's dataset was streamed into (``event.request``)."""
    return getattr(request, "_dataset_file", None)


def discard_partial(assoc) -> None:
    """Remove the half-received file of a peer that vanished mid-transfer."""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    handle = getattr(message, "_data_set_file", None)
    if handle is None:
        return
    try:
        handle.close()
    except OSError:
        pass
    Path(handle.name).unlink(missing_ok=True)


REPLACEMENT = Replacement(
    name="incoming_file",
    summary="a received C-STORE dataset is streamed into a file the application makes",
    mirrors=(
        Mirror("pynetdicom.dimse_messages:DIMSEMessage.decode_msg", "f51c777e841a76beeaadfe3015bd4f4a68387229a72f13f3a3b7846d01d72284"),
        Mirror("pynetdicom.dimse_messages:DIMSEMessage.message_to_primitive", "f8f43d34e43450efa31bd308677b85b370f8ca7600c0e067e854f8095ce665ac"),
    ),
    patches=(Patch("pynetdicom.dimse_messages:NamedTemporaryFile", _incoming_file, users=("DIMSEMessage.decode_msg",)),),
)
