"""The package is layered: each module imports only modules exported from notebooks with lower numbers (the tens
digit is the layer: 0 data, 1 SAEs, 2 training, 3 evaluation and runs, 4 figures, 7 the paper, 9 the command line),
and nothing imports the command line."""
import ast, re
from pathlib import Path
import pytest

PKG = Path(__file__).resolve().parents[1]/'synthsae'
SOURCE = re.compile(r'File to edit: \.\./nbs/(\d+)([a-z]?)_')

def notebook_number(path:Path)->float:
    "00 → 0.0, 00a → 0.1, 35 → 35.0: the position of a module's notebook"
    m = SOURCE.search(path.read_text())
    assert m, f'{path.name} names no source notebook'
    return int(m[1]) + (ord(m[2]) - ord('a') + 1) / 10 if m[2] else float(int(m[1]))

def imported_modules(path:Path)->set[str]:
    "Package modules imported anywhere in `path` (top level or inside functions)"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1: out |= {node.module} if node.module else {a.name for a in node.names}
            elif (node.module or '').startswith('synthsae.'): out.add(node.module.split('.')[1])
            elif node.module == 'synthsae': out |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split('.')[1] if '.' in a.name else '__init__' for a in node.names if a.name.startswith('synthsae')}
    return out

MODULES = sorted(p for p in PKG.glob('*.py') if p.stem not in ('__init__', '_modidx'))

@pytest.mark.parametrize('path', MODULES, ids=lambda p: p.stem)
def test_imports_point_downward(path):
    own = notebook_number(path)
    for name in imported_modules(path):
        if name == '__init__':                             # the command line (layer 9) may use the whole package
            assert own >= 90, f'{path.stem} imports the whole package (import what it uses from its module)'
            continue
        dep = PKG/f'{name}.py'
        if not dep.exists(): continue                      # e.g. `from . import __version__`-style names
        assert name != 'cli', f'{path.stem} imports the command line'
        assert notebook_number(dep) < own, f'{path.stem} (notebook {own:g}) imports {name} (notebook {notebook_number(dep):g})'

def test_every_module_is_checked():
    assert {p.stem for p in MODULES} >= {'core', 'saes', 'training', 'evaluation'}
