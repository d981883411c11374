"The sampler's scratch memory: reused within a thread, private to each thread, and invisible in the samples"
import threading, warnings
import torch
from synthsae.core import make_generator
from synthsae.fixtures import demo_sampler
from synthsae.sampler import SamplerConfig, sparse_from_pairs, _scratch

def _thinned_world():
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', 'compensation clamped')
        return demo_sampler(num_features=1200, rank=4, config=SamplerConfig(copula_rows=64))

def _same(a, b): return all(torch.equal(x, y) for x, y in zip(a[:3], b[:3]))

def test_scratch_is_reused_and_grows():
    like = torch.zeros(1)
    a = _scratch('test', (4, 8), like)
    b = _scratch('test', (2, 8), like)
    assert a.data_ptr() == b.data_ptr() and b.shape == (2, 8)
    c = _scratch('test', (64, 64), like)
    assert c.shape == (64, 64) and c.numel() == 4096
    assert _scratch('test', (4, 8), like).data_ptr() == c.data_ptr()

def test_threads_draw_what_one_thread_draws():
    # two threads sampling the same world at once, each with its own generator, get the batches one thread gets:
    # the copula's scratch rows are per thread (a batch prefetched in a background thread must not share them)
    fs = _thinned_world()
    want = {s: fs.sparse_features(300, make_generator(s)) for s in range(4)}
    got, errors = {}, []
    def work(seeds):
        try:
            for _ in range(3):
                for s in seeds: got[s] = fs.sparse_features(300, make_generator(s))
        except Exception as e: errors.append(e)
    ts = [threading.Thread(target=work, args=(seeds,)) for seeds in ((0, 1), (2, 3))]
    for t in ts: t.start()
    for t in ts: t.join()
    assert not errors and all(_same(got[s], want[s]) for s in want)

def test_inference_mode_then_grad_mode():
    # the scratch tensor made under inference mode stays writable outside it
    fs = _thinned_world()
    with torch.inference_mode(): a = fs.sparse_features(100, make_generator(1))
    b = fs.sparse_features(100, make_generator(1))
    assert _same(a, b)

def test_sort_key_width_does_not_change_the_order():
    # int32 keys when B·N fits, int64 otherwise: the same (sample, feature) order either way
    g = make_generator(0)
    rows, cols = torch.randint(0, 50, (2000,), generator=g), torch.randint(0, 1000, (2000,), generator=g)
    key = torch.unique(rows * 1000 + cols)
    rows, cols = key // 1000, key % 1000
    perm = torch.randperm(len(rows), generator=g)
    rows, cols, vals = rows[perm], cols[perm], torch.rand(len(rows), generator=g)
    small = sparse_from_pairs(rows, cols, vals, 50, 1000)
    big = sparse_from_pairs(rows, cols, vals, 50, 2**40)
    assert _same(small, big) and bool((small.rows[1:] >= small.rows[:-1]).all())
