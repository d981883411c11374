"The reproduction runner: a tiny end-to-end run, resume, failures, parameters cells"
import json, shutil, subprocess, sys
from pathlib import Path
import nbformat, pytest
from synthsae.paper import NOTEBOOKS, FINDINGS, reproduce, select_notebooks, default_nbs_dir, is_finished

NBS = default_nbs_dir()
PARAMS = ['scale', 'device', 'seeds', 'l0s', 'architectures', 'training_samples', 'out_dir']

def _nb(path, code):
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'python3', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_code_cell('scale = "tiny"\nout_dir = None', metadata={'tags': ['parameters']}), nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, path)

def test_tiny_l0_sweep_end_to_end_and_resume(tmp_path):
    archs = ['batchtopk', 'matryoshka_batchtopk', 'matching_pursuit']
    s = reproduce('tiny', out=tmp_path/'rep', only='F2', architectures=archs, progress=False)
    out = tmp_path/'rep'
    assert s['failed'] == [] and s['notebooks']['72_l0_sweep']['status'] == 'ran'
    for f in ('F2_l0_sweep.png', 'F2_l0_sweep.svg', 'F2_l0_sweep.csv', 'F3_precision_recall.png', 'T3_results.csv', 'T3_results.md', '72_l0_sweep.json'):
        assert (out/'72_l0_sweep'/f).is_file(), f
    assert (out/'notebooks'/'72_l0_sweep.ipynb').is_file()
    summary = json.loads((out/'summary.json').read_text())
    assert [f['id'] for f in summary['findings']] == list(FINDINGS)
    assert all(set(f) >= {'id', 'statement', 'held'} and f['held'] in (True, False, None) for f in summary['findings'])
    held = {f['id']: f['held'] for f in summary['findings']}
    assert held['mp_superposition'] is None                     # 73 did not run
    assert held['precision_falls_recall_rises'] in (True, False)  # measured by 72
    rec = summary['numbers']['72_l0_sweep']
    assert rec['scale'] == 'tiny' and rec['settings']['architectures'] == archs
    t3 = [c for c in summary['comparisons'] if c['item'] == 'T3' and c['arch'] == 'matryoshka_batchtopk' and c['quantity'] == 'f1']
    assert t3 and t3[0]['reference'] == 0.8793                     # the paper's number beside ours
    page = (out/'report.html').read_text()
    assert page.count('data:image/png;base64,') >= 2 and 'src="http' not in page and '0.8793' in page
    # a second run skips the finished notebook; other settings or --force rerun it
    assert is_finished(out, '72_l0_sweep', 'tiny', dict(architectures=archs))
    assert not is_finished(out, '72_l0_sweep', 'tiny', dict(architectures=['batchtopk']))
    assert not is_finished(out, '72_l0_sweep', 'cpu')
    s2 = reproduce('tiny', out=out, only='72_l0_sweep', architectures=archs, progress=False)
    assert s2['notebooks']['72_l0_sweep']['status'] == 'skipped' and s2['wall_s'] < 10
    # the resumed notebook keeps its own run time, in the summary and the report
    assert s2['notebooks']['72_l0_sweep']['seconds'] > 0 and s2['notebooks_s'] >= s2['notebooks']['72_l0_sweep']['seconds']
    assert 'skipped (ran earlier in ' in (out/'report.html').read_text() and 'skipped (0 s)' not in (out/'report.html').read_text()

def test_failing_notebook_is_named_and_others_run(tmp_path):
    _nb(tmp_path/'01_broken.ipynb', "raise RuntimeError('broken on purpose')")
    _nb(tmp_path/'02_ok.ipynb', "from synthsae.paper import write_numbers, scale_settings\nwrite_numbers(out_dir, '02_ok', scale_settings(scale), dict(x=1))")
    _nb(tmp_path/'03_silent.ipynb', "x = 1")  # runs but writes no JSON: a failure too
    cat = {'01_broken': ('X1',), '02_ok': ('X2',), '03_silent': ('X3',)}
    s = reproduce('tiny', out=tmp_path/'rep', nbs_dir=tmp_path, catalog=cat, progress=False)
    assert s['failed'] == ['01_broken', '03_silent']
    assert s['notebooks']['02_ok']['status'] == 'ran'
    assert 'RuntimeError: broken on purpose' in s['notebooks']['01_broken']['error']
    assert 'wrote no 03_silent.json' in s['notebooks']['03_silent']['error']
    assert 'broken on purpose' in (tmp_path/'rep'/'report.html').read_text()

def test_relative_out_is_the_callers_folder(tmp_path, monkeypatch):
    "papermill runs each notebook in the notebooks' folder, so a relative `out` must be resolved where it is given"
    nbs, work = tmp_path/'nbs', tmp_path/'work'
    nbs.mkdir(); work.mkdir()
    _nb(nbs/'02_ok.ipynb', "from synthsae.paper import write_numbers, scale_settings\n"
                           "write_numbers(out_dir, '02_ok', scale_settings(scale), dict(x=1))")
    monkeypatch.chdir(work)
    s = reproduce('tiny', out='rep', nbs_dir=nbs, catalog={'02_ok': ('X2',)}, progress=False)
    assert s['failed'] == [] and (work/'rep'/'02_ok'/'02_ok.json').is_file()
    assert not (nbs/'rep').exists()

def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"scale must be one of \['tiny', 'cpu', 'paper'\]"): reproduce('huge', out=tmp_path/'r')
    with pytest.raises(ValueError, match=r"unknown notebook or item ID\(s\) \['F99'\]; valid: .*'F2'"): reproduce('tiny', out=tmp_path/'r', only='F99')
    with pytest.raises(FileNotFoundError, match='parent folder'): reproduce('tiny', out=tmp_path/'no'/'r')
    with pytest.raises(ValueError, match='architectures must be one of'):
        from synthsae.paper import scale_settings; scale_settings('tiny', architectures=['relu'])

def test_every_item_has_a_notebook():
    items = {i for its in NOTEBOOKS.values() for i in its}
    assert {'T1', 'T2', 'T3', 'F1', 'F2', 'F3', 'F4', 'F5', 'F6', 'F7', 'F8'} <= items
    assert select_notebooks('T1,F4') == ['71_worlds', '73_superposition']
    assert select_notebooks('F8,F5') == ['74_correlation', '77_dead_latents']

@pytest.mark.parametrize('name', list(NOTEBOOKS))
def test_parameters_cell_survives_nbdev_clean(tmp_path, name):
    "Each notebook's first code cell is tagged `parameters`, holds every knob with the tiny default, and keeps the tag through nbdev_clean"
    dst = tmp_path/f'{name}.ipynb'; shutil.copy(NBS/f'{name}.ipynb', dst)
    subprocess.run([str(Path(sys.executable).parent/'nbdev_clean'), '--fname', str(dst)], check=True, cwd=NBS.parent)
    nb = nbformat.read(dst, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == 'code')
    assert cell.metadata.get('tags') == ['parameters']
    ns = {}; exec(cell.source, ns)
    assert [k for k in ns if not k.startswith('__')] == PARAMS
    assert ns['scale'] == 'tiny' and ns['out_dir'] is None
