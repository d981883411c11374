"Development tools (tools/): they use the package's public API only, and the benchmark harnesses run at the tiny scale"
import ast, json, sys
from pathlib import Path
import pytest, torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.mark.parametrize('path', sorted((ROOT/'tools').glob('*.py')), ids=lambda p: p.name)
def test_tools_import_no_private_names(path):
    "A tool imports nothing private from synthsae: what it needs is public, with a docstring"
    private = [f'{n.module}.{a.name}' for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)
               and (n.module or '').startswith('synthsae') for a in n.names if a.name.startswith('_')]
    assert private == []


def test_package_holds_no_tooling():
    "The import surface is the science: no documentation builder or benchmark harness in synthsae/"
    assert not {'docs.py', 'bench.py', 'train_bench.py'} & {p.name for p in (ROOT/'synthsae').glob('*.py')}


def test_bench_tiny(tmp_path):
    from tools.bench import main
    s = main(scale='tiny', n_batches=2, out=str(tmp_path/'bench'))
    assert s['ours']['samples_per_second'] > 0 and [r['num_features'] for r in s['scaling']] == [1_024, 4_096, 16_384]
    md = (tmp_path/'bench.md').read_text()
    assert md.startswith('# Data-engine benchmark (tiny, tiny world)') and '| samples/s |' in md
    assert json.loads((tmp_path/'bench.json').read_text())['params']['scale'] == 'tiny'


def test_train_bench_tiny(tmp_path, monkeypatch):
    from tools.train_bench import main, summary
    monkeypatch.delenv('SYNTHSAE_REFERENCE_PYTHON', raising=False)
    res = main(scale='tiny', n_steps=3, out=str(tmp_path/'train.json'))
    assert all(res[k]['samples_per_s'] > 0 for k in ('data', 'step', 'train', 'train_prefetch'))
    assert 'skipped' in res['reference'] and 'skipped' in summary(res)
    f = res['floor']   # the bound adds the data to the step's floor: it is always the lower rate
    assert f['product_ms'] > 0 and f['adam_ms'] > 0 and f['samples_per_s'] < f['step_samples_per_s']
    assert summary(res)['train_of_floor'] > 0


def test_train_profile_tiny(tmp_path):
    "Every architecture's step is timed phase by phase; the TopK family with both backward paths and AuxK off/on"
    from tools.train_bench import main, PHASES
    res = main(scale='tiny', n_steps=1, profile=True, out=str(tmp_path/'profile.json'))
    rows = res['profile']
    assert len(rows) == 3 + 3 * 4 and all(r[p] >= 0 for r in rows for p in PHASES)
    assert {(r['path'], r['auxk']) for r in rows if r['arch'] == 'batchtopk'} == {
        (p, a) for p in ('sparse', 'dense') for a in ('off', 'all dead')}
    assert json.loads((tmp_path/'profile.json').read_text())['scale'] == 'tiny'


def test_bench_repeats_tiny(tmp_path):
    "The sampler timed in fresh processes: min <= median <= max over the repeats"
    from tools.bench import main
    s = main(scale='tiny', n_batches=2, repeats=2, only_repeats=True, reference_python='', out=str(tmp_path/'rep'))
    o = s['repeats']['ours']
    assert len(o['values']) == 2 and 0 < o['min'] <= o['median'] <= o['max']
    assert json.loads((tmp_path/'rep.json').read_text())['repeats']['omp_wait_policy'] == 'PASSIVE'


def test_lint_drops_only_nbdevs_all_line(tmp_path):
    "tools/lint.py drops E501 only on the first line of nbdev's generated `__all__`; other long or `;` lines fail"
    pytest.importorskip('ruff')
    from tools.lint import findings, main
    names = ', '.join(f"'name_{i:02d}'" for i in range(12))
    src = ['"A module as nbdev writes it"', '', '# %% auto #0', f"__all__ = [{names},", "           'last']", '',
           'x = 1; y = 2', f"z = '{'a' * 120}'", f"__all__ = [{names}, 'last']", '']
    assert len(src[3]) > 120 and len(src[8]) > 120
    f = tmp_path/'mod.py'
    f.write_text('\n'.join(src))
    assert [(r['code'], r['location']['row']) for r in findings([f])] == [('E702', 7), ('E501', 8), ('E501', 9)]
    (tmp_path/'ok.py').write_text('\n'.join(src[:6]))
    assert findings([tmp_path/'ok.py']) == [] and main([str(tmp_path/'ok.py')]) == 0 and main([str(f)]) == 1


@pytest.mark.parametrize('dense', [False, True])
def test_op_profile_tiny(tmp_path, dense):
    "The operator profile runs at the tiny size on the CPU, for both backward paths, and writes what it prints"
    from tools.op_profile import main
    rec = main(scale='tiny', device='cpu', dense=dense, n_steps=2, out=str(tmp_path/'op'))
    assert rec['path'] == ('dense' if dense else 'sparse') and rec['kernels_per_step'] == 0
    assert all(rec[k] > 0 for k in ('ms_step_with_data', 'ms_step_fixed_batch', 'ms_data'))
    assert json.loads((tmp_path/'op'/'summary.json').read_text()) == rec
    assert 'Self CPU' in (tmp_path/'op'/'by_host_time.txt').read_text()


def test_standard_by_density_tiny(tmp_path):
    "The Standard step by share of active entries: the share is set as asked, both paths are timed"
    from tools.train_bench import main
    res = main(scale='tiny', n_steps=1, density=True, out=str(tmp_path/'density.json'))
    rows = res['standard_by_density']
    assert [r['active'] for r in rows][0] < 0.04 and rows[-1]['active'] > 0.3   # a subsample's quantile: roughly
    assert all(r['sparse_ms'] > 0 and r['dense_ms'] > 0 for r in rows)
    assert json.loads((tmp_path/'density.json').read_text())['standard_by_density'] == rows


def test_op_profile_rejects_bad_input():
    "An unknown size or an unusable device is a clear error naming the field, before any world is built"
    from tools.op_profile import profile
    with pytest.raises(ValueError, match=r"scale must be one of \['full', 'tiny'\]"):
        profile(scale='huge', device='cpu')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='device'): profile(scale='tiny', device='cuda')
