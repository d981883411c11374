"""Regenerate the reference SAE fixtures with the reference library (SAELens): $SYNTHSAE_REFERENCE_PYTHON make_ref_saes.py

Each folder holds an SAE directory written by the reference (`save_inference_model`, or `save_model` for the
`*_train` folders) and `io.safetensors` with inputs `x` and the reference inference model's `z` and `x_hat`."""
import torch, sae_lens
from pathlib import Path
from safetensors.torch import save_file
from sae_lens import SAE
from sae_lens.saes import (StandardTrainingSAE, StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig,
    BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig,
    MatryoshkaBatchTopKTrainingSAE, MatryoshkaBatchTopKTrainingSAEConfig, MatchingPursuitTrainingSAE,
    MatchingPursuitTrainingSAEConfig)

out = Path(__file__).parent
torch.manual_seed(0)
specs = [('standard', StandardTrainingSAE, StandardTrainingSAEConfig, {}),
         ('topk', TopKTrainingSAE, TopKTrainingSAEConfig, dict(k=3)),
         ('batchtopk', BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, dict(k=3)),
         ('jumprelu', JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig, dict(jumprelu_init_threshold=0.05)),
         ('matryoshka_batchtopk', MatryoshkaBatchTopKTrainingSAE, MatryoshkaBatchTopKTrainingSAEConfig,
          dict(k=3, matryoshka_widths=[4, 16])),
         ('matching_pursuit', MatchingPursuitTrainingSAE, MatchingPursuitTrainingSAEConfig,
          dict(max_iterations=3, residual_threshold=0., stop_on_duplicate_support=False))]
x = torch.randn(6, 8)
for name, cls, ccls, kw in specs:
    sae = cls(ccls(d_in=8, d_sae=16, **kw))
    with torch.no_grad():
        for p in sae.parameters(): p.add_(torch.randn_like(p) * 0.1)
        if hasattr(sae, 'topk_threshold'): sae.topk_threshold.fill_(0.05)
    sae.save_inference_model(out/name)
    sae.save_model(out/f'{name}_train')
    inf = SAE.load_from_disk(out/name)
    with torch.no_grad(): z = inf.encode(x); save_file(dict(x=x, z=z, x_hat=inf.decode(z)), out/name/'io.safetensors')
print('written with sae_lens', sae_lens.__version__)
