"""gateway.store: the MWL index keeps multi-valued station AE titles as candidates."""

from __future__ import annotations

from mappings.mwl import IndexFilter
from mappings.worklist import WorklistItem


def test_a_step_on_several_stations_is_found_by_each(store):
    """Scheduled Station AE Title is 1-n (PS3.4 Table K.6-1): each of its values finds the step."""
    try:
        store.add_worklist_items(
            [
                WorklistItem(patient_id="P1", station_ae="DXA1", start_date="20261124", accession_number="A1"),
                WorklistItem(patient_id="P2", station_ae="DXA1\\DXA2", start_date="20261124", accession_number="A2"),
                WorklistItem(patient_id="P3", station_ae="DXA3", start_date="20261124", accession_number="A3"),
                WorklistItem(patient_id="P4", station_ae="DXA2\\DXA3", start_date="20261125", accession_number="A4"),
            ]
        )

        def found(**kw) -> list[str]:
            return [r.item.accession_number for r in store.find_worklist(IndexFilter(**kw))]

        assert set(found(station_ae="DXA1")) >= {"A1", "A2"} and "A3" not in found(station_ae="DXA1")
        assert set(found(station_ae="DXA2")) >= {"A2", "A4"}
        assert "A4" not in found(station_ae="DXA2", date_from="20261124", date_to="20261124")
        assert found(station_ae="DXA3", date_from="20261125") == ["A4"]
        assert found() == ["A1", "A2", "A3", "A4"]  # ordered by start, then id
    finally:
        store.close()
