"""Data-parallel training worker for tests: `torchrun --nproc_per_node 2 tests/ddp_worker.py OUT_DIR [STEPS]`.

Each rank builds the SAE with a *different* seed (rank 0's weights are broadcast at the start), trains on its own
replayable stream (batch t·world + rank), and saves its final state dict to OUT_DIR/rank{r}.pt; rank 0 also
writes the JSONL log to OUT_DIR/log.jsonl.
"""
import sys
from pathlib import Path
import torch
import torch.distributed as dist
from synthsae.model import SyntheticModel
from synthsae.saes import make_sae
from synthsae.training import train_sae

def main(out:str, steps:int=150):
    torch.set_num_threads(1)
    dist.init_process_group('gloo')
    rank = dist.get_rank()
    model = SyntheticModel.from_preset('tiny')
    sae = make_sae('batchtopk', model.hidden_dim, 64, k=5, seed=rank)
    sae = train_sae(sae, model, steps * 128 * dist.get_world_size(), batch_size=128, lr=3e-3, progress=False,
                    log_every=25, log_path=Path(out)/'log.jsonl', dead_feature_window=50)
    torch.save(sae.state_dict(), Path(out)/f'rank{rank}.pt')
    dist.destroy_process_group()

if __name__ == '__main__':
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
