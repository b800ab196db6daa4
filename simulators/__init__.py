"""Stand-alone peers of the DXA gateway, for tests, demos and vendors.

Each is an importable class with ``run()``/``start()``/``stop()`` and a
``report()`` returning a :class:`~simulators.report.ConformanceReport`, and a
``dxa-sim`` sub-command (:mod:`simulators.cli`):

* :class:`simulators.scanner.ScannerSimulator`: DXA scanner (MWL, MPPS,
  C-STORE, Storage Commitment), also a load generator;
* :class:`simulators.ris.RisSimulator`: RIS/HIS orders over HL7 MLLP or FHIR
  (message builders in :mod:`simulators.orders`);
* :class:`simulators.pacs.PacsSimulator`: C-STORE, commitment and MPPS SCP;
* :class:`simulators.emr.EmrSimulator`: ORU^R01 MLLP receiver and FHIR
  Bundle endpoint.

Never imports ``gateway``; sample SRs come from ``mappings.bmd.samples``.
"""
