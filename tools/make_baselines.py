"""Write the baseline files the benchmark card ships (synthsae/data/baselines/<world>.json).

--paper: the 16k world, from the paper's published numbers as the reproduction module holds them.
--sweep DIR: a world from the L0 sweep that `synthsae reproduce --only F2 --out DIR` wrote (tiny or cpu scale);
run it after that reproduction, never on hand-typed numbers.
"""
import argparse
from datetime import datetime, timezone
from pathlib import Path
from synthsae.card import baseline_from_sweep, paper_baseline, read_sweep_record, write_baseline


def paper_numbers():
    "The paper's L0-sweep and results-table numbers and the paper scale's probe settings"
    from synthsae.paper import F2_REFERENCE, T3_REFERENCE, SCALES
    return F2_REFERENCE, T3_REFERENCE, dict(num_steps=SCALES['paper'].probe_steps, lr=SCALES['paper'].probe_lr)


def sweep_file(src:Path)->Path:
    "The record file inside a reproduction folder (for its date)"
    return next(f for f in (src, src/'72_l0_sweep.json', src/'72_l0_sweep'/'72_l0_sweep.json') if f.is_file())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--paper', action='store_true', help="write the 16k world's file from the paper's numbers")
    ap.add_argument('--sweep', action='append', default=[], help='reproduction folder or 72_l0_sweep.json; repeatable')
    ap.add_argument('--out', default=None, help='folder of the baseline files (default: the package data folder)')
    a = ap.parse_args(argv)
    if a.paper:
        f2, t3, probe = paper_numbers()
        print(write_baseline(paper_baseline(f2, t3, probe=probe), a.out))
    for src in a.sweep:
        rec = read_sweep_record(src)
        date = datetime.fromtimestamp(sweep_file(Path(src)).stat().st_mtime, timezone.utc).date().isoformat()
        print(write_baseline(baseline_from_sweep(rec, date=date), a.out))


if __name__ == '__main__': main()
