"""C-FIND response identifiers sent as bytes already encoded.

An SCP that encodes a response once and answers the same bytes to many
queries (gateway/dicom/mwl.py caches them per item and query shape) yields
an :class:`EncodedIdentifier`; pynetdicom's C-FIND SCP
(``ServiceClass._c_find_scp``) encodes each pending identifier with the
module's ``encode``, which here passes those bytes through and sends
everything else to pynetdicom's ``encode`` as before.  The identifier must
be in the association's transfer syntax, and pynetdicom must not log
response identifiers (``_config.LOG_RESPONSE_IDENTIFIERS = False``), as
its logger would try to print them as a dataset.
"""

from __future__ import annotations

from pynetdicom.dsutils import encode as _pynetdicom_encode

from dicomext.guard import Mirror, Patch, Replacement


class EncodedIdentifier:
    """A C-FIND response identifier already encoded for the association."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def encode(ds, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False) -> bytes | None:
    """``pynetdicom.dsutils.encode``, passing an :class:`EncodedIdentifier` through as it is."""
    if isinstance(ds, EncodedIdentifier):
        return ds.data
    return _pynetdicom_encode(ds, is_implicit_vr, is_little_endian, deflated)


REPLACEMENT = Replacement(
    name="encoded_identifiers",
    summary="a C-FIND SCP may yield identifiers already encoded (EncodedIdentifier)",
    mirrors=(Mirror("pynetdicom.service_class:ServiceClass._c_find_scp", "da242b908ef4848ceaec8937680dfe9d23705301f6bad99de6dd64786cd9a7ca"),),
    # Any other value still goes to pynetdicom's encode, so the module's other
    # readers (the N-* and Q/R SCPs) see no change: no list of users to check.
    patches=(Patch("pynetdicom.service_class:encode", encode),),
)
