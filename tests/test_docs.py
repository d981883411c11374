"Offline docs build (pandoc fallback) and README freshness"
import json, os, re, sys
from pathlib import Path
import pytest
from synthsae.docs import build_docs, docs_command, readme_markdown

pytest.importorskip('pypandoc')
pytest.importorskip('papermill')

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'


def _code(src, outputs=()):
    return dict(cell_type='code', metadata={}, execution_count=None, source=src, outputs=list(outputs))

def _notebook(*cells):
    return dict(nbformat=4, nbformat_minor=5, cells=list(cells),
                metadata=dict(kernelspec=dict(name='python3', display_name='python3', language='python')))

def _md(s): return dict(cell_type='markdown', metadata={}, source=s)

def _checks(html:str):
    "What every page must satisfy: offline, no nbdev directives, no hidden cells"
    assert not re.search(r'<script[^>]+src\s*=\s*["\']?(https?:)?//', html), 'page loads a remote script'
    assert not re.search(r'<link[^>]+href\s*=\s*["\']?(https?:)?//', html), 'page loads a remote style sheet'
    assert '#| export' not in html and '#|' not in html
    assert 'nbdev_export' not in html and 'from fastcore.test import' not in html


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "00_core executed by papermill; index and 04_hierarchy rendered from their stored outputs"
    out = tmp_path_factory.mktemp('docs')
    run = build_docs(out/'run', nbs=[NBS/'00_core.ipynb'], nbs_path=NBS, execute=True, timeout=120,
                     engine='pandoc', report=None, progress=False)
    stored = build_docs(out/'stored', nbs=[NBS/'index.ipynb', NBS/'04_hierarchy.ipynb'], nbs_path=NBS, execute=False,
                        engine='pandoc', report=None, progress=False)
    return run, stored


def test_one_page_per_notebook(site):
    run, stored = site
    assert run.failed == {} and stored.failed == {}
    assert sorted(p.name for p in run.out_dir.glob('*.html')) == ['00_core.html']
    assert sorted(p.name for p in stored.out_dir.glob('*.html')) == ['04_hierarchy.html', 'index.html']
    core = (run.out_dir/'00_core.html').read_text()
    _checks(core)
    assert '<title>Core – synthsae</title>' in core and 'atomic_directory' in core
    # executed by the build: outputs present, sidebar marks the page
    assert 'class="output execute_result"' in core and 'aria-current="page">Core<' in core


def test_figures_embedded_and_math(site):
    _, stored = site
    index, hier = (stored.out_dir/'index.html').read_text(), (stored.out_dir/'04_hierarchy.html').read_text()
    for html in (index, hier): _checks(html)
    nb = json.loads((NBS/'index.ipynb').read_text())
    n_png = sum('image/png' in o.get('data', {}) for c in nb['cells'] for o in c.get('outputs', []))
    assert n_png >= 1 and index.count('src="data:image/png;base64,') == n_png
    assert not re.search(r'<img[^>]+src="(?!data:)', index + hier), 'an image is not embedded'
    assert '<math' in hier and 'MathJax' not in hier and 'katex' not in hier.lower()
    # every page lists the others, with links relative to itself
    assert '<a href="04_hierarchy.html">Hierarchy</a>' in index


def test_failing_notebook_named_rest_built(tmp_path, capsys):
    nbs = tmp_path/'nbs'; nbs.mkdir()
    good = _notebook(_md('# Good\n> fine'), _code('1 + 1'))
    bad = _notebook(_md('# Bad'), _code('raise ValueError("broken on purpose")'))
    (nbs/'index.ipynb').write_text(json.dumps(good)); (nbs/'01_bad.ipynb').write_text(json.dumps(bad))
    res = build_docs(tmp_path/'site', nbs_path=nbs, execute=True, timeout=60, engine='pandoc', report=None, progress=False)
    assert list(res.failed) == [str(nbs/'01_bad.ipynb')] and 'broken on purpose' in res.failed[str(nbs/'01_bad.ipynb')]
    assert sorted(p.name for p in (tmp_path/'site').glob('*.html')) == ['01_bad.html', 'index.html']
    good_html = (tmp_path/'site'/'index.html').read_text()
    assert re.search(r'class="output execute_result"[^>]*>\s*<pre><code>2</code>', good_html)  # 1 + 1 ran
    assert 'failed to execute' in (tmp_path/'site'/'01_bad.html').read_text()


def test_docs_command_exits_nonzero(tmp_path, monkeypatch):
    (tmp_path/'nbs').mkdir()
    (tmp_path/'nbs'/'index.ipynb').write_text(json.dumps(_notebook(_md('# Bad'), _code('1/0'))))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e: docs_command(out='_docs', execute=True, engine='pandoc')
    assert 'nbs/index.ipynb' in str(e.value) and 'ZeroDivisionError' in str(e.value)
    assert (tmp_path/'_docs'/'index.html').exists()


def test_readme_up_to_date():
    "README.md is nbs/index.ipynb (stored outputs) as GitHub Markdown: regenerate with synthsae.docs.build_readme()"
    text, figures = readme_markdown(json.loads((NBS/'index.ipynb').read_text()))
    assert (ROOT/'README.md').read_text() == text, 'README.md is out of date: run python -c "from synthsae.docs import build_readme; build_readme()"'
    assert figures, 'the index notebook should show a figure'
    for name, data in figures.items():
        assert (ROOT/name).read_bytes() == data, f'{name} is out of date'
    assert '```python' in text and 'make test' in text and 'make reproduce' in text


FAKE_QUARTO = r'''#!/usr/bin/env python3
"Stand-in for `quarto render <project>`: checks the project it is given and writes one page per notebook"
import json, sys, yaml
from pathlib import Path
assert sys.argv[1] == 'render', sys.argv
proj = Path(sys.argv[2]); cfg = yaml.safe_load((proj/'_quarto.yml').read_text())
assert cfg['execute']['enabled'] is False and cfg['project']['output-dir'] == '_site'
(proj/'sidebar.json').write_text(json.dumps(cfg['website']['sidebar']['contents']))
for nb in proj.glob('nbs/**/*.ipynb'):
    cells = json.loads(nb.read_text())['cells']
    assert cells[0]['cell_type'] == 'raw' and cells[0]['source'].startswith('---\ntitle:'), cells[0]
    assert not any('#|' in c['source'] for c in cells if c['cell_type'] == 'code')
    out = proj/'_site'/nb.relative_to(proj).with_suffix('.html'); out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(cells[0]['source'])
for f in proj.glob('reports/**/*'):
    if f.is_file(): out = proj/'_site'/f.relative_to(proj); out.parent.mkdir(parents=True, exist_ok=True); out.write_bytes(f.read_bytes())
'''

def test_quarto_project(tmp_path, monkeypatch):
    "The Quarto path, with a stand-in `quarto` on the PATH (the real one is not installed here)"
    bin_ = tmp_path/'bin'; bin_.mkdir()
    (bin_/'quarto').write_text(FAKE_QUARTO.replace('/usr/bin/env python3', sys.executable)); (bin_/'quarto').chmod(0o755)
    monkeypatch.setenv('PATH', f"{bin_}{os.pathsep}{os.environ['PATH']}")
    report = tmp_path/'reports'/'report.html'; report.parent.mkdir()
    report.write_text('<h1>Report</h1><img src="fig.png">'); (report.parent/'fig.png').write_bytes(b'png')
    res = build_docs(tmp_path/'site', nbs=[NBS/'index.ipynb', NBS/'00_core.ipynb'], nbs_path=NBS, execute=False,
                     report=report, config=ROOT/'_quarto.yml', progress=False)
    assert res.engine == 'quarto' and res.failed == {}
    site = tmp_path/'site'
    assert (site/'nbs'/'00_core.html').read_text().startswith('---\ntitle: Core')
    assert 'url=nbs/index.html' in (site/'index.html').read_text()
    assert (site/'reports'/'fig.png').read_bytes() == b'png'
