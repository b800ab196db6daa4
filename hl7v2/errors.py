"""The error an HL7 v2 message is refused with (HL7 v2.5 2.9.2, Table 0357)."""

from __future__ import annotations


class Hl7Error(Exception):
    """A message the gateway refuses; names the place and the HL7 error code.

    ``code`` is from HL7 Table 0357 (100 segment sequence error, 101
    required field missing, 102 data type error, 103 table value not found,
    200 unsupported message type, 201 unsupported event code, 203
    unsupported version id, 204 unknown key identifier, 207 application
    internal error).  ``ack_code`` is AE (content error) or AR (reject).
    """

    def __init__(
        self,
        text: str,
        *,
        code: int,
        segment: str = "",
        sequence: int = 1,
        field: int = 0,
        component: int = 0,
        ack_code: str = "AE",
    ) -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.segment = segment
        self.sequence = sequence
        self.field = field
        self.component = component
        self.ack_code = ack_code
        self.header = None  # the parsed MSH, when it could be read

    @property
    def location(self) -> str:
        """``PID-7`` style location, empty when the message as a whole is bad."""
        if not self.segment:
            return ""
        loc = self.segment if not self.field else f"{self.segment}-{self.field}"
        return f"{loc}.{self.component}" if self.component else loc
