"""The one HL7 v2 layer: ER7 text in and out, and MLLP framing.

Used by the listener (gateway/hl7), the senders (routes/hl7_mllp.py), the
message mappings (mappings/), the simulators, the benchmarks and the test
peers, so every piece of HL7 v2 syntax is written once:

* :mod:`hl7v2.errors` -- :class:`Hl7Error`, an error naming segment, field
  and HL7 Table 0357 code.
* :mod:`hl7v2.charsets` -- MSH-18 character sets (HL7 Table 0211), decoding
  and encoding a message's bytes.
* :mod:`hl7v2.escaping` -- separators (MSH-1, MSH-2) and escape sequences
  (HL7 v2.5 section 2.7).
* :mod:`hl7v2.er7` -- the ER7 reader (segments and fields, components read
  on demand, the MSH as a :class:`Header`) and writer (segments from
  numbered fields, escaped components).
* :mod:`hl7v2.ack` -- original-mode ACKs: building them (HL7 v2.5 2.9.2,
  2.14.1, ERR 2.15.5) and reading MSA.
* :mod:`hl7v2.mllp` -- MLLP framing (HL7 v2.5.1 Appendix C): the pure
  framer, plus small asyncio and blocking-socket helpers.

Everything but :mod:`hl7v2.mllp` is pure (no I/O, no clock): the caller
passes timestamps and control IDs.  Field *mapping* -- which HL7 field
fills which worklist or report attribute -- stays in mappings/.
"""
