"""Real exports as users download them: both Electricity Maps header spellings, and the untidy files
(byte-order mark, concatenated years, duplicates, short holes) repaired with a note, the rest refused
with the line that is wrong."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gridwise.carbon.traces import MAX_FILLED_GAP, TraceError, load_trace, read_header, trace_kind

SHIPPED = Path(__file__).resolve().parents[2] / "operator" / "gridwise" / "data" / "traces"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "carbon"
OLD_HEADER = (
    "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
    "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,Data Source,"
    "Data Estimated,Data Estimation Method"
)
# The data portal's spelling since 2024.
NEW_HEADER = (
    "Datetime (UTC),Country,Zone name,Zone id,Carbon intensity gCO₂eq/kWh (direct),"
    "Carbon intensity gCO₂eq/kWh (Life cycle),Carbon-free energy percentage (CFE%),"
    "Renewable energy percentage (RE%),Data source,Data estimated,Data estimation method"
)
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def row(hour: int, direct: str, lca: str = "50") -> str:
    when = T0 + timedelta(hours=hour)
    return f"{when:%Y-%m-%d %H:%M:%S},Norway,Norway,NO,{direct},{lca},95,90,entsoe.eu,false,"


def write(tmp_path: Path, lines: list[str], name: str = "trace.csv", bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("header", [OLD_HEADER, NEW_HEADER, NEW_HEADER.replace("₂", "2")])
def test_both_electricity_maps_spellings_load_either_column(tmp_path: Path, header: str) -> None:
    path = write(tmp_path, [header, row(0, "10", "60"), row(1, "20", "70"), row(2, "30", "80")], bom=True)
    direct = load_trace(path)
    assert (direct.zone, direct.signal_type, direct.emission_factor) == ("NO", "average", "direct")
    assert direct.values == (10.0, 20.0, 30.0)
    assert direct.step == timedelta(hours=1) and direct.start == T0
    assert direct.notes == ()
    lca = load_trace(path, "lca")
    assert lca.values == (60.0, 70.0, 80.0) and lca.emission_factor == "lifecycle"
    assert trace_kind(read_header(path)) == "electricitymaps"  # the live path reads the header this way


def test_shipped_traces_need_no_repair() -> None:
    paths = [
        *sorted(SHIPPED.glob("*_actual.csv")),
        *sorted(SHIPPED.glob("electricitymaps_*.csv")),
        FIXTURES / "em_us-cal-ciso_2022-04_hourly.csv",
        FIXTURES / "wt_caiso-north_2023-06-08_actual.csv",
    ]
    assert len(paths) == 4  # the two traces the package ships, and the test fixtures
    for path in paths:
        assert load_trace(path).notes == (), path.name


def test_short_holes_are_interpolated_and_said(tmp_path: Path) -> None:
    lines = [NEW_HEADER, row(0, "10"), row(3, "40"), row(4, ""), row(5, "nan"), row(6, "100"), row(7, "90")]
    trace = load_trace(write(tmp_path, lines))
    assert trace.values == pytest.approx((10, 20, 30, 40, 60, 80, 100, 90))
    assert trace.notes == (
        "filled 4 missing step(s) in 2 hole(s) (longest 2:00:00) by linear interpolation between "
        "their neighbours",
    )


def test_a_long_hole_is_refused_with_its_line(tmp_path: Path) -> None:
    limit = int(MAX_FILLED_GAP / timedelta(hours=1))
    filled = load_trace(write(tmp_path, [NEW_HEADER, row(0, "10"), row(1, "10"), row(limit + 2, "10")]))
    assert len(filled.values) == limit + 3  # a hole of exactly the limit is filled
    path = write(tmp_path, [NEW_HEADER, row(0, "10"), row(1, "10"), row(limit + 3, "10")])
    with pytest.raises(TraceError, match=r"trace.csv:4: 7:00:00 of data missing before 2024-03-01 09:00 UTC"):
        load_trace(path)


def test_concatenated_years_out_of_order_with_duplicates(tmp_path: Path) -> None:
    # Two exports pasted together, the later one first, overlapping by one row; plus empty edges.
    lines = [
        NEW_HEADER, row(3, "40"), row(4, "50"), row(5, ""),
        NEW_HEADER, row(0, ""), row(1, "20"), row(2, "30"), row(3, "40"),
    ]  # fmt: skip
    trace = load_trace(write(tmp_path, lines))
    assert trace.start == T0 + timedelta(hours=1)
    assert trace.values == (20.0, 30.0, 40.0, 50.0)
    assert trace.notes == (
        "skipped 1 repeated header row(s)",
        "dropped 1 duplicate row(s)",
        "rows were not in time order; sorted them",
        "dropped 2 row(s) with no value at the start or end",
    )


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([NEW_HEADER, row(0, "10"), row(1, "20"), row(1, "25")], r":4: 2024-03-01 01:00 UTC appears again"),
        ([NEW_HEADER, row(0, "10"), row(1, "20"), row(2, "-3")], r":4: intensity -3 g/kWh is out of range"),
        ([NEW_HEADER, row(0, "10"), row(1, "x")], r":3: bad intensity value 'x'"),
        ([NEW_HEADER, row(0, ""), row(1, "20"), row(2, "")], r"at least two rows with a value"),
        ([NEW_HEADER.replace("(direct)", "(dir)"), row(0, "1"), row(1, "2")], r"lacks the column"),
    ],
)
def test_what_cannot_be_repaired_is_refused(tmp_path: Path, lines: list[str], message: str) -> None:
    with pytest.raises(TraceError, match=message):
        load_trace(write(tmp_path, lines))


def test_an_irregular_step_is_refused(tmp_path: Path) -> None:
    lines = ["time,CAISO_NORTH"] + [
        f"2023-06-08 00:{minute:02d}:00,{400 + minute}" for minute in (0, 5, 10, 15, 20, 27)
    ]
    message = r":7: irregular step \(0:07:00 after 2023-06-08 00:20 UTC; the trace's step is 0:05:00\)"
    with pytest.raises(TraceError, match=message):
        load_trace(write(tmp_path, lines))
