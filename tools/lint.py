"""Readable lines in the exported code: ruff's checks as pyproject.toml sets them (lines of at most 120 characters,
one statement per line), less one line per module that nbdev writes and no notebook controls.

nbdev 2 wraps a module's generated `__all__` list at 120 columns and only then puts `__all__ = ` in front of it, so
the first line of that list can reach 130 characters. `nbdev_export` rewrites that line on every export (a `# noqa`
there would not survive), so an E501 finding on it is dropped; every other finding fails the check.
"""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def generated_all_line(path:str|Path, row:int)->bool:
    "Whether line `row` (1-based) of `path` is the first line of the `__all__` that nbdev generates"
    lines = Path(path).read_text(encoding='utf-8').splitlines()
    return 2 <= row <= len(lines) and lines[row-1].startswith('__all__ = [') and lines[row-2] == '# %% auto #0'


def findings(paths:list[str])->list[dict]:
    "ruff's findings on `paths` (the settings of pyproject.toml), less E501 on nbdev's generated `__all__` line"
    cmd = [sys.executable, '-m', 'ruff', 'check', '--config', str(ROOT/'pyproject.toml'), '--output-format', 'json',
           '--exit-zero', *map(str, paths)]
    found = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return [f for f in found if not (f['code'] == 'E501' and generated_all_line(f['filename'], f['location']['row']))]


def main(argv=None)->int:
    "Print each finding as `path:row:col: code message`; exit status 1 when there is any"
    found = findings((sys.argv[1:] if argv is None else argv) or ['synthsae'])
    for f in found:
        loc = f['location']
        print(f"{os.path.relpath(f['filename'])}:{loc['row']}:{loc['column']}: {f['code']} {f['message']}")
    print(f"lint: {len(found)} finding(s)" if found else "lint: all lines readable")
    return 1 if found else 0


if __name__ == '__main__': sys.exit(main())
