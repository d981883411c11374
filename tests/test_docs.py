"Offline docs build (tools/docs.py: nbdev's processing, the pandoc fallback) and README freshness"
import json, os, re, sys
from pathlib import Path
import pytest

pytest.importorskip('pypandoc')
ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
sys.path.insert(0, str(ROOT))
from tools.docs import build_docs, doc_notebooks, main, readme_markdown, process_notebook


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
    "00_core executed by the build; index and 04_hierarchy rendered from their stored outputs"
    out = tmp_path_factory.mktemp('docs')
    run = build_docs(out/'run', nbs=[NBS/'00_core.ipynb'], nbs_path=NBS, execute=True, timeout=120,
                     engine='pandoc', report=None, progress=False)
    stored = build_docs(out/'stored', nbs=[NBS/'index.ipynb', NBS/'04_hierarchy.ipynb'], nbs_path=NBS, execute=False,
                        engine='pandoc', report=None, progress=False)
    return run, stored


def test_one_page_per_notebook(site):
    run, stored = site
    assert run.failed == {} and stored.failed == {}
    assert sorted(p.name for p in run.out_dir.glob('*.html')) == ['core.html']          # nbdev's page names
    assert sorted(p.name for p in stored.out_dir.glob('*.html')) == ['hierarchy.html', 'index.html']
    core = (run.out_dir/'core.html').read_text()
    _checks(core)
    assert '<title>Core – synthsae</title>' in core
    # exported names documented by nbdev's show_doc (signature, docstring), not shown as code
    assert '<h3 id="atomic_directory">atomic_directory</h3>' in core and 'Yield a temporary folder beside' in core
    assert '#| export' not in core and '@contextmanager' not in core
    # executed by the build: outputs present, sidebar marks the page
    assert 'class="output execute_result"' in core and 'aria-current="page">Core<' in core


def test_figures_embedded_and_math(site):
    _, stored = site
    index, hier = (stored.out_dir/'index.html').read_text(), (stored.out_dir/'hierarchy.html').read_text()
    for html in (index, hier): _checks(html)
    nb = json.loads((NBS/'index.ipynb').read_text())
    n_png = sum('image/png' in o.get('data', {}) for c in nb['cells'] for o in c.get('outputs', []))
    assert n_png >= 1 and index.count('src="data:image/png;base64,') == n_png
    assert not re.search(r'<img[^>]+src="(?!data:)', index + hier), 'an image is not embedded'
    assert '<math' in hier and 'MathJax' not in hier and 'katex' not in hier.lower()
    # every page lists the others, with links relative to itself; links into the site point at the local pages
    assert '<a href="hierarchy.html">Hierarchy</a>' in index
    assert 'href="core.html"' in index and not re.search(r'href="[^"]*\.ipynb', index)   # links to notebooks reach their pages
    assert 'synthsae.github.io' not in hier and re.search(r'<a href="hierarchy\.html#\w+"><code>', hier)


def test_sidebar_lists_every_notebook():
    "nbdev's sidebar order: index first, then every notebook of nbs/ (none starting with _ or .)"
    found = doc_notebooks(NBS)
    expected = [p for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.'))]
    assert found[0].name == 'index.ipynb' and sorted(found) == sorted(expected)
    assert [p.name for p in found[1:]] == sorted(p.name for p in expected if p.name != 'index.ipynb')


def test_page_names_collide(tmp_path):
    "nbdev names 31_probes and 76_probes both probes.html: the first keeps nbdev's name, the other its own"
    nbs = tmp_path/'nbs'; nbs.mkdir()
    for n, title in (('index', 'Home'), ('01_probes', 'Probes'), ('02_probes', 'F7 probes')):
        (nbs/f'{n}.ipynb').write_text(json.dumps(_notebook(_md(f'# {title}'), _code('1'))))
    res = build_docs(tmp_path/'site', nbs_path=nbs, execute=False, engine='pandoc', report=None, progress=False)
    assert [(p.href, p.title) for p in res.pages] == [('index.html', 'Home'), ('probes.html', 'Probes'), ('02_probes.html', 'F7 probes')]
    assert sorted(p.name for p in (tmp_path/'site').glob('*.html')) == ['02_probes.html', 'index.html', 'probes.html']


def test_failing_notebook_named_rest_built(tmp_path, capsys):
    nbs = tmp_path/'nbs'; nbs.mkdir()
    good = _notebook(_md('# Good\n> fine'), _code('1 + 1'))
    bad = _notebook(_md('# Bad'), _code('raise ValueError("broken on purpose")'))
    (nbs/'index.ipynb').write_text(json.dumps(good)); (nbs/'01_bad.ipynb').write_text(json.dumps(bad))
    res = build_docs(tmp_path/'site', nbs_path=nbs, execute=True, timeout=60, engine='pandoc', report=None, progress=False)
    assert list(res.failed) == [str(nbs/'01_bad.ipynb')] and 'broken on purpose' in res.failed[str(nbs/'01_bad.ipynb')]
    assert sorted(p.name for p in (tmp_path/'site').glob('*.html')) == ['bad.html', 'index.html']
    good_html = (tmp_path/'site'/'index.html').read_text()
    assert re.search(r'class="output execute_result"[^>]*>\s*<pre><code>2</code>', good_html)  # 1 + 1 ran
    assert 'failed to execute' in (tmp_path/'site'/'bad.html').read_text()


def test_docs_command_exits_nonzero(tmp_path, monkeypatch):
    (tmp_path/'nbs').mkdir()
    (tmp_path/'nbs'/'index.ipynb').write_text(json.dumps(_notebook(_md('# Bad'), _code('1/0'))))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e: main(out='_docs', execute=True, engine='pandoc', nbs_path=str(tmp_path/'nbs'))
    assert 'nbs/index.ipynb' in str(e.value) and 'ZeroDivisionError' in str(e.value)
    assert (tmp_path/'_docs'/'index.html').exists()


def test_readme_up_to_date():
    "README.md is nbs/index.ipynb (stored outputs, processed by nbdev) as GitHub Markdown: regenerate with `make docs`"
    text, figures = readme_markdown(process_notebook(NBS/'index.ipynb'))
    assert (ROOT/'README.md').read_text() == text, 'README.md is out of date: run python tools/docs.py --readme True (or make docs)'
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
for nb in proj.glob('**/*.ipynb'):
    cells = json.loads(nb.read_text())['cells']
    fm = yaml.safe_load(cells[0]['source'].strip().strip('-'))      # nbdev's front matter opens the notebook
    assert cells[0]['cell_type'] == 'raw' and fm['title'] and fm['output-file'].endswith('.html'), cells[0]
    nbdev_directives = ('#| export', '#| hide', '#| default_exp')
    assert not any(d in c['source'] for c in cells for d in nbdev_directives), nb
    out = proj/'_site'/fm['output-file']; out.parent.mkdir(parents=True, exist_ok=True)
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
    assert (site/'core.html').read_text().startswith('---') and 'title: Core' in (site/'core.html').read_text()
    assert (site/'index.html').is_file() and (site/'reports'/'fig.png').read_bytes() == b'png'
    assert [p.href for p in res.pages] == ['index.html', 'core.html', 'reports/report.html']
