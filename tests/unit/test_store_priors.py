"""The priors tables of the store (README "Priors from the PACS"), on both databases: records, audit, backfill runs, A40 merge."""

from __future__ import annotations

from gateway.store.priors import PriorStudyRow


def row(uid, state="retrieving", pid="P1", origin="lookup", issuer=""):
    return PriorStudyRow(uid, pid, issuer, "20200101", "pacs", origin, state, "", None)


def test_a_study_is_recorded_once_and_its_retrieval_is_audited(open_test_store):
    s = open_test_store()
    assert s.add_prior_studies([row("1.1"), row("1.2", "mismatch")]) == 2
    assert s.add_prior_studies([row("1.1", "queued", origin="backfill")]) == 0  # kept as first recorded
    s.set_prior_study("1.1", "retrieved", "3 objects")
    assert s.prior_study("1.1").state == "retrieved" and s.prior_study("1.1").origin == "lookup"
    assert s.prior_counts() == {"lookup": {"retrieved": 1, "mismatch": 1}}
    assert s._query("SELECT event, actor FROM audit WHERE event LIKE 'priors.%'") == [("priors.retrieved", "lookup")]


def test_a_backfill_run_is_found_again_by_its_key(open_test_store):
    s = open_test_store()
    run_id, state, cursor = s.backfill_run("20150101|", "20150101")
    assert (state, cursor) == ("surveying", "")
    s.set_backfill_run(run_id, cursor="20150331")
    s.close()
    s = open_test_store()  # as after kill -9: the same command resumes
    assert s.backfill_run("20150101|", "20150101") == (run_id, "surveying", "20150331")
    assert s.backfill_run("20160101|", "20160101")[0] != run_id


def test_a_merge_moves_prior_studies_of_the_issuer_or_of_none(open_test_store):
    s = open_test_store()
    s.add_prior_studies([row("2.1", pid="OLD"), row("2.2", pid="OLD", issuer="HOSP"), row("2.3", pid="OLD", issuer="OTHER")])
    with s._transaction() as conn:
        s._merge_priors(conn, "OLD", "HOSP", "NEW", "HOSP")
    assert {r.study_uid for r in s.prior_studies_for("NEW")} == {"2.1", "2.2"}
    assert [r.study_uid for r in s.prior_studies_for("OLD")] == ["2.3"]
