"""MkDocs hook: the page benchmarks.md from the bench JSON files in docs/benchmarks/ (each written
by a script of bench/ with ``--out``, carrying its ``recorded`` block: date, CPU, cores, GPU,
torch, commit, command). Nothing on the page is typed by hand."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks"
PLACEHOLDER = "<!-- generated from docs/benchmarks/*.json -->"
GROUPS = ("full", "payne", "mstar", "yso")
PARAMS = ("teff", "logg", "fe_h")


def _number(value: float, parameter: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:.0f}" if parameter == "teff" or abs(value) >= 100 else f"{value:.3g}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _recorded(result: dict) -> str:
    r = result.get("recorded", {})
    where = r.get("gpu") or f"{r.get('cpu', '?')}, {r.get('cores', '?')} cores"
    kernels = "".join(f" · {name}={value}" for name, value in r.get("kernels", {}).items())
    return (f"*{r.get('date', '?')} · {where}{kernels} · torch {r.get('torch', '?')} · commit {r.get('commit') or '?'} · "
            f"`{r.get('command', '?')}`*")


def _limit(result: dict) -> str:
    models = ("labels", "ensemble", "single", "ridge", "cannon")
    rows = []
    for group in GROUPS:
        for parameter in PARAMS:
            cell = result["groups"].get(group, {}).get(parameter)
            if not cell:
                continue
            ratio = result["crlb_ratio"].get(group, {}).get(parameter, {})
            rows.append([f"{group} {parameter}", _number(cell["median_bound"], parameter)]
                        + [f"{_number(ratio.get(m))}×" if ratio.get(m) is not None else "—" for m in models])
    return ("Cramér–Rao bound (median over the test stars) and each model's RMS against the truth as a "
            "multiple of the bound's RMS (`crlb_ratio`).\n\n"
            + _table(["group, parameter", "median bound", *models], rows))


def _calibration(result: dict) -> str:
    cells = result["resplit_cell_pass_rate"]
    averaged = result.get("resplit_cell_mean", {})  # files from before these fields have none
    rows = [[cell, f"{result['test_cells'][cell]['z_robust_sigma']:.2f}",
             f"{result['test_cells'][cell]['frac_within_1sigma']:.0%}", f"{rate:.0%}",
             (f"{averaged[cell]['z_robust_sigma']:.2f}, {averaged[cell]['frac_within_1sigma']:.0%}"
              if cell in averaged else "—"),
             f"{result['systematic_over_sigma'].get(cell, float('nan')):+.2f}"] for cell, rate in cells.items()]
    ceiling = result.get("resplit_cells_met_mean_of_fitted_exact_sigma")
    return (f"{result['n_stars']} stars, {result.get('members', 1)} member(s): test split **{result['bar_cells_met']} "
            f"of 9** cells meet the bar; over {result['resplits']} re-splits **{result['resplit_cells_met_mean']:.2f} "
            f"of 9** on average (a σ exactly right: {result['bar_cells_expected_of_exact_sigma']:.1f}"
            + (f"; right in shape, its level fitted on the dev half: {ceiling:.2f}" if ceiling is not None else "")
            + ")" + (f", and the re-split averages of each cell meet it in **{result['resplit_mean_cells_met']} of 9**"
                     if "resplit_mean_cells_met" in result else "") + ".\n\n"
            + _table(["cell", "robust σ of z", "within 1σ", "re-splits passing", "re-split average",
                      "systematic / σ"], rows))


def _accuracy(result: dict) -> str:
    summary = result["summary"]
    sizes = [str(s) for s in result["training_sizes"]]
    rows = []
    for cell in summary["ensemble"][sizes[0]]:
        parameter = cell.split("/")[1]
        rows.append([cell] + [" / ".join(_number(summary[m][size][cell]["mean"], parameter)
                                         for m in ("ensemble", "single", "ridge", "cannon")) for size in sizes])
    ahead = "; ".join(f"N = {size}: " + ", ".join(f"seed {seed} {len(cells)}"
                                                  for seed, cells in result["ensemble_ahead"][size].items())
                      for size in sizes)
    maps = result.get("output_maps", {})
    kept = "; ".join(f"N = {size}: " + ", ".join(
        f"seed {seed} " + (", ".join(" ".join(key.split("/")[1:-1]) for key, kept in fit.items()
                                     if key.endswith("/kept") and kept) or "none")
        for seed, fit in maps[size].items()) for size in sizes if size in maps)
    return (f"Test RMS against the truth (mean over seeds {result['seeds']}; ensemble / first member / ridge / "
            f"The Cannon) at {', '.join(sizes)} training spectra. Cells where the ensemble is ahead of both "
            f"baselines: {ahead}." + (f" Output maps kept: {kept}." if kept else "") + "\n\n"
            + _table(["cell", *(f"N = {s}" for s in sizes)], rows))


RENDERERS = {"limit": _limit, "calibration": _calibration, "accuracy": _accuracy}


def render() -> str:
    """Every JSON in docs/benchmarks/, one section each, newest first by name."""
    sections = []
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        kind = path.stem.split("-")[0]
        body = RENDERERS[kind](result) if kind in RENDERERS else "```json\n" + json.dumps(
            {k: v for k, v in result.items() if k != "recorded"}, indent=1)[:3000] + "\n```"
        sections.append(f"## {path.stem}\n\n{_recorded(result)}\n\n{body}\n")
    return "\n".join(sections)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if PLACEHOLDER in markdown:
        return markdown.replace(PLACEHOLDER, render())
    return markdown
