"""The versioned schema: migration N takes the database from N-1 to N.

``PRAGMA user_version`` holds the version (SQLite).  Append new migrations;
never edit one that has shipped.  PostgreSQL runs the same numbers
(gateway/store/pg_migrations.py translates each, or takes its own script).
"""

MIGRATIONS: list[str] = [
    # 1: inbound messages, the worklist and the audit trail
    """
    CREATE TABLE inbound_messages (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,            -- hl7, fhir
        sender TEXT NOT NULL,            -- MSH-3|MSH-4, or the FHIR client
        message_id TEXT NOT NULL,        -- MSH-10, or the resource id
        message_type TEXT NOT NULL,
        received_at TEXT NOT NULL,
        ack_code TEXT NOT NULL,
        raw BLOB NOT NULL,
        UNIQUE (source, sender, message_id)
    );
    CREATE TABLE worklist_items (
        id INTEGER PRIMARY KEY,
        status TEXT NOT NULL,
        station_ae TEXT NOT NULL,
        modality TEXT NOT NULL,
        start_date TEXT NOT NULL,
        start_time TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        issuer TEXT NOT NULL,
        patient_name_upper TEXT NOT NULL,
        accession TEXT NOT NULL,
        requested_procedure_id TEXT NOT NULL,
        sps_id TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        placer_order TEXT NOT NULL,
        filler_order TEXT NOT NULL,
        source TEXT NOT NULL,
        sender TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        item BLOB NOT NULL               -- WorklistItem as JSON
    );
    -- The MWL reads only open steps, so its indexes cover only those.
    CREATE INDEX wl_station ON worklist_items (station_ae, start_date)
        WHERE status IN ('SCHEDULED', 'IN PROGRESS');
    CREATE INDEX wl_date ON worklist_items (start_date)
        WHERE status IN ('SCHEDULED', 'IN PROGRESS');
    CREATE INDEX wl_name ON worklist_items (patient_name_upper)
        WHERE status IN ('SCHEDULED', 'IN PROGRESS');
    CREATE INDEX wl_patient ON worklist_items (patient_id);
    CREATE INDEX wl_accession ON worklist_items (accession);
    CREATE INDEX wl_study ON worklist_items (study_uid);
    CREATE INDEX wl_placer ON worklist_items (placer_order);
    CREATE INDEX wl_filler ON worklist_items (filler_order);
    CREATE INDEX wl_status ON worklist_items (status);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        event TEXT NOT NULL,
        actor TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    """,
    # 2: the spool index, MPPS, storage commitment and the outbox
    """
    CREATE TABLE instances (
        id INTEGER PRIMARY KEY,
        sop_instance_uid TEXT NOT NULL,
        sop_class_uid TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        series_uid TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        accession TEXT NOT NULL,
        modality TEXT NOT NULL,
        manufacturer TEXT NOT NULL,
        kind TEXT NOT NULL,
        transfer_syntax TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        path TEXT NOT NULL,
        calling_ae TEXT NOT NULL,
        received_at TEXT NOT NULL,
        is_current INTEGER NOT NULL DEFAULT 1  -- 0: a later copy replaced it
    );
    CREATE INDEX inst_sop ON instances (sop_instance_uid);
    CREATE INDEX inst_study ON instances (study_uid);
    CREATE INDEX inst_received ON instances (received_at);
    CREATE TABLE mpps (
        id INTEGER PRIMARY KEY,
        sop_instance_uid TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        calling_ae TEXT NOT NULL,
        worklist_item_id INTEGER REFERENCES worklist_items (id),
        study_uid TEXT NOT NULL,
        accession TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        attributes BLOB NOT NULL          -- DICOM JSON
    );
    CREATE TABLE commitments (
        id INTEGER PRIMARY KEY,
        transaction_uid TEXT NOT NULL,
        calling_ae TEXT NOT NULL,
        requested_at TEXT NOT NULL,
        state TEXT NOT NULL,              -- requested, reported, failed
        request BLOB NOT NULL,            -- [[sop class, sop instance], ...]
        failed INTEGER NOT NULL DEFAULT 0,
        reported_at TEXT
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        destination TEXT NOT NULL,
        kind TEXT NOT NULL,               -- image, sr, pdf, dose, report, mpps, order-status
        ref_table TEXT NOT NULL,
        ref_id INTEGER NOT NULL,
        order_key TEXT NOT NULL,          -- delivery order is kept per study per destination
        state TEXT NOT NULL,              -- pending, in_flight, done, dead
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        delivered_at TEXT,
        last_error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX outbox_due ON outbox (destination, state, next_attempt_at);
    CREATE INDEX outbox_order ON outbox (destination, order_key, id);
    """,
    # 3: BMD exams extracted from SRs, and each released report version
    """
    CREATE TABLE exams (
        id INTEGER PRIMARY KEY,
        instance_id INTEGER NOT NULL REFERENCES instances (id),
        sop_instance_uid TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        accession TEXT NOT NULL,
        exam_date TEXT NOT NULL,
        state TEXT NOT NULL,              -- parsed, unparsed
        reason TEXT NOT NULL DEFAULT '',  -- why unparsed
        exam BLOB,                        -- BmdExam as JSON (exact decimal strings)
        analysis BLOB,                    -- classification, comparison, previous exam id
        report_status TEXT NOT NULL DEFAULT '',  -- P, F, C
        report_text TEXT NOT NULL DEFAULT '',
        reporter TEXT NOT NULL DEFAULT '',
        signed_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX exams_patient ON exams (patient_id, exam_date);
    CREATE INDEX exams_study ON exams (study_uid);
    CREATE TABLE study_doses (
        study_uid TEXT PRIMARY KEY,
        dose BLOB NOT NULL                -- DoseRecord as JSON, from an RDSR of the study
    );
    CREATE TABLE reports (
        id INTEGER PRIMARY KEY,
        exam_id INTEGER NOT NULL REFERENCES exams (id),
        status TEXT NOT NULL,             -- F final, C corrected
        text TEXT NOT NULL,
        reporter TEXT NOT NULL,
        released_at TEXT NOT NULL
    );
    CREATE INDEX reports_exam ON reports (exam_id);
    """,
    # 4: the few open steps scheduled on several stations (Scheduled Station
    # AE Title is 1-n, PS3.4 Table K.6-1), found without scanning the rest
    """
    CREATE INDEX wl_multi_station ON worklist_items (start_date)
        WHERE status IN ('SCHEDULED', 'IN PROGRESS') AND instr(station_ae, '\\') > 0;
    """,
    # 5: what was signed is what is sent (docs/architecture.md rule 9): every outbound
    # payload of a released report version, rendered once with its hash; and
    # the clinical context of orders and exams (README: "The clinical context")
    """
    CREATE TABLE report_payloads (
        id INTEGER PRIMARY KEY,
        report_id INTEGER NOT NULL REFERENCES reports (id),
        destination TEXT NOT NULL,
        format TEXT NOT NULL,             -- hl7-oru, fhir-bundle
        control_id TEXT NOT NULL,         -- MSH-10 of the ORU (or the Bundle's version key)
        body BLOB NOT NULL,               -- the exact bytes every attempt sends
        sha256 TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (report_id, destination)
    );
    CREATE TABLE order_contexts (
        worklist_item_id INTEGER PRIMARY KEY REFERENCES worklist_items (id),
        context BLOB NOT NULL,            -- ClinicalContext as JSON, from the order (HL7 OBX/NTE/DG1, FHIR)
        updated_at TEXT NOT NULL
    );
    ALTER TABLE exams ADD COLUMN context BLOB;  -- ClinicalContext from the radiographer (PUT /api/exams/{id}/context)
    """,
    # 6: the durable hand-off to the result reader and one exam per study
    #    with a settle window (README "BMD results and reports")
    """
    ALTER TABLE instances ADD COLUMN results_state TEXT NOT NULL DEFAULT '';
        -- '' not a result carrier; pending (set with the index row, before the ack);
        -- read; none (no results in it); unparsed (results_reason says why)
    ALTER TABLE instances ADD COLUMN results_reason TEXT NOT NULL DEFAULT '';
    ALTER TABLE instances ADD COLUMN results BLOB;  -- BmdExam JSON of this object alone
    CREATE INDEX inst_results_pending ON instances (results_state) WHERE results_state = 'pending';
    ALTER TABLE exams ADD COLUMN settle_until TEXT;  -- state settling: draft the report after this
    """,
    # 7: priors from the PACS (README "Priors from the PACS"): the studies asked for (a C-STORE of
    #    one is a prior, never routed), each exam's lookup, and backfill runs
    """
    CREATE TABLE prior_studies (
        study_uid TEXT PRIMARY KEY,
        patient_id TEXT NOT NULL,
        issuer TEXT NOT NULL,
        study_date TEXT NOT NULL,
        source TEXT NOT NULL,             -- the destination asked
        origin TEXT NOT NULL,             -- lookup, backfill
        state TEXT NOT NULL,              -- queued, retrieving, retrieved, failed, mismatch
        note TEXT NOT NULL DEFAULT '',
        for_exam INTEGER,                 -- the exam whose lookup found it
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX prior_patient ON prior_studies (patient_id);
    CREATE INDEX prior_state ON prior_studies (origin, state, study_date);
    CREATE TABLE prior_lookups (
        exam_id INTEGER PRIMARY KEY REFERENCES exams (id),
        state TEXT NOT NULL,              -- running, done, failed
        deadline TEXT NOT NULL,           -- the report waits until then
        note TEXT NOT NULL DEFAULT '',
        found INTEGER NOT NULL DEFAULT 0,
        started_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE TABLE backfill_runs (
        id INTEGER PRIMARY KEY,
        run_key TEXT NOT NULL UNIQUE,     -- since and the patients list: the same command resumes
        since TEXT NOT NULL,
        state TEXT NOT NULL,              -- surveying, retrieving, finished
        cursor TEXT NOT NULL DEFAULT '',  -- the last query window surveyed
        started_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
    # 8: scanner QA (README "Running a DXA service"): phantom scans, one BMD each, by scanner
    """
    CREATE TABLE qa_scans (
        id INTEGER PRIMARY KEY,
        serial TEXT NOT NULL,             -- Device Serial Number of the scanner
        instance_id INTEGER NOT NULL UNIQUE REFERENCES instances (id),
        station_ae TEXT NOT NULL,         -- calling AE title of the phantom's C-STORE
        manufacturer TEXT NOT NULL,
        model TEXT NOT NULL,
        patient_id TEXT NOT NULL,         -- the phantom's Patient ID
        site TEXT NOT NULL,               -- the region whose BMD was taken (spine total)
        bmd TEXT NOT NULL,                -- g/cm2 as the scanner printed it
        scanned_at TEXT NOT NULL,         -- study date and time (UTC ISO), else when received
        received_at TEXT NOT NULL
    );
    CREATE INDEX qa_serial ON qa_scans (serial, scanned_at);
    """,
    # 9: several replicas share the outbox (README "Several replicas on PostgreSQL"): a claim is a lease,
    #    held by one replica until it runs out
    """
    ALTER TABLE outbox ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';  -- the replica sending it
    ALTER TABLE outbox ADD COLUMN lease_until TEXT;                     -- in_flight: another replica may take it after this
    CREATE INDEX outbox_leased ON outbox (destination, lease_until) WHERE state = 'in_flight';
    """,
]
