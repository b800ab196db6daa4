"""The gateway's DICOM services: pynetdicom SCPs (Verification, MWL, MPPS,
Storage, Storage Commitment).  What they need of pynetdicom beyond its
public API lives in the extension package, dicomext/ (docs/architecture.md rule 10)."""
