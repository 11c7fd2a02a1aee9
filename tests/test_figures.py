"""Every figure in the docs comes from the one results file, through the generator.

No measuring here: these tests read ``benchmarks/results.json`` and render from it.
"""

from __future__ import annotations

import copy
import importlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
figures: Any = importlib.import_module("figures")
chart: Any = importlib.import_module("chart")

# Pages checked for figure-like numbers outside a marked block, each with the phrases
# on it that look like figures but are settings (not measured). Other pages join this
# list once their hand-copied figures have become blocks.
CHECKED_PAGES: dict[str, tuple[str, ...]] = {
    "README.md": ("up to 2 s",),  # the grace before SIGKILL on cancellation
    "docs/benchmarks.md": ("200 µs", "50 µs", "2 ms"),  # polling; the sporadic interval
    "docs/extending.md": (),
    "docs/getting-started.md": (),
    "docs/index.md": (),
    # what an automatic chunk aims at; the least work in a chunk for a ramp of two
    "docs/many-tasks.md": ("10 ms", "0.3 ms"),
    "docs/migrating.md": ("200 µs", "50 µs", "2 ms"),  # the polling settings; the interval
    "docs/process.md": ("100 µs",),  # how long run_process polls once an output ends
    "docs/scaling-out.md": (),
    "docs/text.md": (),
    "docs/workers.md": ("2 ms",),  # the interval of the sporadic calls
}
# Every page that may hold blocks: all of them are checked against the results file.
ALL_PAGES = sorted(
    str(path.relative_to(ROOT)) for path in [ROOT / "README.md", *ROOT.glob("docs/*.md")]
)


@pytest.fixture(scope="module")
def results() -> Any:
    return figures.load(ROOT / "benchmarks" / "results.json")


@pytest.mark.parametrize("page", ALL_PAGES)
def test_page_blocks_match_the_results_file(page: str, results: Any) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    rendered = figures.render_page(text, results)
    assert rendered == text, (
        f"{page}: a figure block differs from the results file; "
        f"run `hatch run bench:figures {page}`"
    )


@pytest.mark.parametrize("page", sorted(CHECKED_PAGES))
def test_no_figure_outside_a_block(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    assert figures.stray_figures(text, CHECKED_PAGES[page]) == []


def test_benchmarks_page_shows_the_report() -> None:
    text = (ROOT / "docs/benchmarks.md").read_text(encoding="utf-8")
    names = {name for block in figures.blocks(text) for name in block.names}
    assert names >= {"targets", "machine", "all"}


def test_chart_matches_the_results_file(results: Any) -> None:
    svg = (ROOT / "docs/img/benchmarks.svg").read_text(encoding="utf-8")
    assert svg == chart.render_svg(results)


def test_targets_in_the_file_are_those_its_rows_give(results: Any) -> None:
    # A hand edit of a row (or of "met") would leave the two apart.
    assert results["targets"] == json.loads(
        json.dumps(figures.evaluate_targets(results["figures"]), ensure_ascii=False)
    )


def test_every_row_has_its_spread_unit_and_role(results: Any) -> None:
    machine = results["machine"]
    for key in ("python", "platform", "cpus", "load_before", "load_after", "date"):
        assert machine[key] not in (None, "", [])
    assert isinstance(results["quick"], bool)
    keys = [figure["key"] for figure in results["figures"]]
    assert len(keys) == len(set(keys))
    for figure in results["figures"]:
        assert figure["unit"]
        assert figure["rows"], figure["key"]
        for row in figure["rows"]:
            assert row["role"] in {"subject", "anyio", "floor", "floor-2", "other"}
            assert row["samples"]
            assert row["min"] <= row["q1"] <= row["median"] <= row["q3"] <= row["max"]
            assert row["min"] == min(row["samples"])
            assert row["max"] == max(row["samples"])
            assert row["median"] == pytest.approx(statistics.median(row["samples"]))
            assert row["n"] == len(row["samples"])


def test_dask_rows_stay_out_of_the_chart(results: Any) -> None:
    dask_titles = {f["title"] for f in results["figures"] if f["section"] == "dask"}
    assert dask_titles
    drawn = {summary.group for summary in chart.summarize(results)}
    assert drawn
    assert not drawn & dask_titles


# -- the generator and the checks themselves -------------------------------------------

PAGE = """# A page

Prose with a setting of 200 µs.

<!-- figures: round-trip -->
stale
<!-- /figures -->

More prose.
"""


def test_a_changed_figure_in_a_block_is_found(results: Any) -> None:
    page = figures.render_page(PAGE, results)
    assert figures.render_page(page, results) == page
    tampered = copy.deepcopy(results)
    (figure,) = [f for f in tampered["figures"] if f["key"] == "round-trip"]
    figure["rows"][0]["median"] = figure["rows"][0]["median"] * 2 + 1
    tampered_page = figures.render_page(PAGE, tampered)
    assert tampered_page != page
    # Only the block changed: the prose around it is kept as it was.
    assert tampered_page.startswith("# A page\n\nProse with a setting of 200 µs.\n")
    assert tampered_page.endswith("<!-- /figures -->\n\nMore prose.\n")


def test_a_quick_run_says_so_in_every_figure_table(results: Any) -> None:
    quick = dict(results, quick=True)
    assert "Quick run" in figures.render_block(["round-trip"], quick)
    assert "Quick run" in figures.render_block(["targets"], quick)
    slow = dict(results, quick=False)
    assert "Quick run" not in figures.render_block(["targets"], slow)


def test_a_figure_outside_a_block_is_found() -> None:
    text = PAGE + "\nprocio makes 49,483 calls/s, 5.6x AnyIO, in 0.93 ms and 12 µs.\n"
    assert figures.stray_figures(text, ("200 µs",)) == [
        "49,483 calls/s",
        "5.6x",
        "0.93 ms",
        "12 µs",
    ]
    # The same inside a block is the block's business.
    inside = "<!-- figures: echo -->\n419 MB/s and 2.9x\n<!-- /figures -->\n"
    assert figures.stray_figures(inside) == []
    # A setting is only excused where it is listed.
    assert figures.stray_figures(PAGE) == ["200 µs"]


@pytest.mark.parametrize(
    "text",
    [
        "<!-- figures: echo -->\nno end\n",
        "<!-- figures: echo -->\n<!-- figures: spawn -->\n<!-- /figures -->\n",
        "text\n<!-- /figures -->\n",
    ],
    ids=["unclosed", "nested", "stray-end"],
)
def test_a_malformed_block_is_an_error(text: str, results: Any) -> None:
    with pytest.raises(figures.FiguresError):
        figures.render_page(text, results)


def test_an_unknown_block_name_is_an_error(results: Any) -> None:
    with pytest.raises(figures.FiguresError, match="no figure block named 'round-trips'"):
        figures.render_page("<!-- figures: round-trips -->\n<!-- /figures -->\n", results)


def test_a_target_not_measured_says_so(results: Any) -> None:
    without = dict(results, figures=[f for f in results["figures"] if f["key"] != "echo"])
    evaluated = figures.evaluate_targets(without["figures"])
    echo = [entry for entry in evaluated if entry["figure"] == "echo"]
    assert echo
    assert all(entry["met"] is None for entry in echo)
    table = figures.render_targets(dict(without, targets=evaluated))
    assert "not measured" in table


def test_ratios_are_paired_by_round() -> None:
    subject = {"samples": [10.0, 40.0, 30.0]}
    reference = {"samples": [5.0, 10.0, 30.0]}
    # Round by round: 2, 4, 1; not the ratio of medians (30 / 10 = 3).
    assert figures.paired_ratio(subject, reference) == {"median": 2.0, "min": 1.0, "max": 4.0}


def test_a_marker_shown_in_a_code_fence_is_not_a_block(results: Any) -> None:
    text = "Write:\n\n```markdown\n<!-- figures: echo -->\n<!-- /figures -->\n```\n"
    assert figures.blocks(text) == []
    assert figures.render_page(text, results) == text
    # The same markers outside the fence are a block, and get rendered.
    bare = "<!-- figures: echo -->\n<!-- /figures -->\n"
    assert figures.render_page(bare, results) != bare


# -- the many-tasks group: several figures in one table, ratios to a reference ---------


def _figure(key: str, unit: str, rows: list[tuple[str, str, list[float]]], *, higher: bool) -> Any:
    """A figure as ``run.py`` joins it, each row with its spread computed here."""
    out = []
    for name, role, samples in rows:
        ordered = sorted(samples)
        out.append(
            {
                "name": name,
                "role": role,
                "samples": samples,
                "per_process": [samples],
                "median": statistics.median(samples),
                "min": ordered[0],
                "max": ordered[-1],
                "q1": ordered[0],
                "q3": ordered[-1],
                "n": len(samples),
            }
        )
    return {
        "key": key,
        "title": f"title of {key}",
        "section": "many-tasks",
        "unit": unit,
        "higher_is_better": higher,
        "note": f"note of {key}.",
        "rows": out,
    }


@pytest.fixture
def many(results: Any) -> Any:
    """The real results file with the three figures of the many-tasks group added."""
    added = [
        _figure(
            "map-tiny",
            "items/s",
            [
                ("procio map", "subject", [300.0, 330.0, 360.0]),
                # The first peer listed is not the best one: loky is.
                ("PPE map", "other", [100.0, 110.0, 120.0]),
                ("loky map", "other", [200.0, 220.0, 240.0]),
                ("anyio per item", "anyio", [10.0, 11.0, 12.0]),
            ],
            higher=True,
        ),
        _figure(
            "cpu-bound",
            "s",
            [
                ("procio map", "subject", [0.33, 0.36, 0.40]),
                ("PPE map", "other", [0.32, 0.33, 0.34]),
                ("ideal", "floor", [0.30, 0.30, 0.32]),
            ],
            higher=False,
        ),
        _figure(
            "stream",
            "items/s",
            [
                ("procio stream", "subject", [50.0, 60.0, 70.0]),
                ("procio list", "other", [100.0, 100.0, 100.0]),
            ],
            higher=True,
        ),
    ]
    figures_ = [*_without_many(results)["figures"], *added]
    return dict(results, figures=figures_, targets=figures.evaluate_targets(figures_))


def _without_many(results: Any) -> Any:
    """The results file as it was before the many-tasks group was measured."""
    kept = [f for f in results["figures"] if f.get("section") != "many-tasks"]
    return dict(results, figures=kept, targets=figures.evaluate_targets(kept))


def _target(results: Any, key: str) -> Any:
    (entry,) = [entry for entry in results["targets"] if entry["figure"] == key]
    return entry


def test_the_map_target_is_against_the_best_peer_not_the_first(many: Any) -> None:
    # Per round 300/200, 330/220, 360/240: 1.5x loky's; against the first peer
    # listed (ProcessPoolExecutor's) it would read 3x.
    entry = _target(many, "map-tiny")
    assert entry["ratio"] == pytest.approx({"median": 1.5, "min": 1.5, "max": 1.5})
    assert entry["met"] is True
    # The cpu-bound target is to the ideal, the floor: 0.36 / 0.30 = 1.2x, not met.
    cpu = _target(many, "cpu-bound")
    assert cpu["ratio"]["median"] == pytest.approx(1.2)
    assert cpu["met"] is False


def test_the_best_peer_of_a_time_is_the_lowest() -> None:
    figure = _figure(
        "t",
        "s",
        [
            ("procio", "subject", [1.0]),
            ("slow", "other", [3.0]),
            ("fast", "anyio", [2.0]),
            ("ideal", "floor", [0.5]),
        ],
        higher=False,
    )
    assert figures.best_peer(figure)["name"] == "fast"
    # A table compares with the floor where there is one.
    assert figures.reference_row(figure)["name"] == "ideal"
    alone = _figure("t", "s", [("procio", "subject", [1.0])], higher=False)
    assert figures.best_peer(alone) is None


def test_the_many_tasks_block_is_one_table_with_ratios_to_each_reference(many: Any) -> None:
    text = figures.render_block(["many-tasks"], many)
    lines = text.splitlines()
    assert "| row | contender | median | range | ratio |" in lines
    table = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    # One line per contender, in the order of the figures and of their rows; the row
    # label only on the first line of each figure.
    assert [c[1] for c in cells] == [
        "procio map",
        "PPE map",
        "loky map",
        "anyio per item",
        "procio map",
        "PPE map",
        "ideal",
        "procio stream",
        "procio list",
    ]
    assert [c[0] for c in cells] == [
        "title of map-tiny (items/s, higher is better)",
        "",
        "",
        "",
        "title of cpu-bound (s, lower is better)",
        "",
        "",
        "title of stream (items/s, higher is better)",
        "",
    ]
    assert [c[4] for c in cells] == [
        "1.50x",  # procio / loky, the best peer
        "0.50x",
        "reference",
        "0.050x",
        "1.20x",  # procio / ideal, per round: 1.1, 1.2, 1.25
        "1.07x",
        "reference",
        "0.60x",
        "reference",
    ]
    assert cells[0][2:4] == ["330", "300\u2013360"]
    for key in ("map-tiny", "cpu-bound", "stream"):
        assert f"*title of {key}:* note of {key}." in lines
    # A figure block of the same name cannot show it otherwise.
    assert "vs AnyIO" not in text


def test_the_all_block_shows_the_many_tasks_group_as_its_table(many: Any) -> None:
    text = figures.render_block(["all"], many)
    assert text.count("#### Many tasks") == 1
    section = text.split("#### Many tasks", 1)[1].split("#### ", 1)[0]
    assert section.strip() == figures.render_block(["many-tasks"], many)
    # Dask stays the last group.
    assert text.index("#### Many tasks") < text.index("#### Dask")


def test_many_tasks_not_measured_or_quick_says_so(results: Any, many: Any) -> None:
    without = figures.render_page(
        "<!-- figures: many-tasks -->\n<!-- /figures -->\n", _without_many(results)
    )
    assert "*Not measured in this run: many-tasks.*" in without
    quick = dict(many, quick=True)
    assert figures.render_block(["many-tasks"], quick).startswith("> **Quick run:**")


def test_the_chart_draws_the_many_tasks_figures_with_an_anyio_row_or_a_floor(
    many: Any,
) -> None:
    drawn = {summary.group: summary for summary in chart.summarize(many)}
    assert drawn["title of map-tiny"].vs_anyio is not None
    assert drawn["title of cpu-bound"].vs_floor is not None
    # The stream figure has neither AnyIO nor a floor: nothing to draw.
    assert "title of stream" not in drawn
    assert "title of stream" not in chart.render_svg(many)


def test_the_chart_draws_the_sections_in_the_order_of_the_tables(results: Any, many: Any) -> None:
    # The many-tasks script runs before the process one (by name), yet its figures
    # are drawn after the worker figures, as the "all" table shows them.
    first = [f for f in many["figures"] if f["section"] == "many-tasks"]
    reordered = dict(many, figures=[*first, *[f for f in many["figures"] if f not in first]])
    groups = [summary.group for summary in chart.summarize(reordered)]
    assert groups[-2:] == ["title of map-tiny", "title of cpu-bound"]
    # The rest keep the results file's order: the chart of a file without the group
    # is the one drawn before it existed.
    assert groups[:-2] == [summary.group for summary in chart.summarize(_without_many(results))]
