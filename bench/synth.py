"""Synthetic-survey generation speed, and the ridge learnability probe, as JSON.

    python bench/synth.py [--n-stars 500] [--learnability 2000] [--out bench/results/synth.json]

``stars_per_s`` is the whole survey path (populations, spectra, noise, apStar files and
catalogs written); ``spectra_per_s`` is the physics and noise alone, without writing files.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchio import emit

from apogeenet.config import SynthParams
from apogeenet.synth.learnability import ridge_learnability
from apogeenet.synth.populations import draw_survey
from apogeenet.synth.survey import SpectrumSynthesizer, make_survey


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-stars", type=int, default=500)
    parser.add_argument("--learnability", type=int, default=2000, help="stars for the ridge probe (0: skip)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    fractions = SynthParams().fractions

    with tempfile.TemporaryDirectory(prefix="apogeenet-synth-") as tmp:
        t0 = time.perf_counter()
        make_survey(tmp, args.n_stars, seed=0, fractions=fractions)
        survey_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*.fits"))

    t0 = time.perf_counter()
    SpectrumSynthesizer(0).combined(draw_survey(0, args.n_stars, fractions))
    physics_s = time.perf_counter() - t0

    result: dict[str, object] = {
        "n_stars": args.n_stars,
        "stars_per_s": round(args.n_stars / survey_s, 1),
        "spectra_per_s": round(args.n_stars / physics_s, 1),
        "bytes_per_star": round(size / args.n_stars),
    }
    if args.learnability:
        stars = draw_survey(1, args.learnability, fractions)
        table = ridge_learnability(SpectrumSynthesizer(1).combined(stars), stars).round(4).reset_index()
        result["ridge_learnability"] = table.to_dict("records")
    emit(result, args.out)


if __name__ == "__main__":
    main()
