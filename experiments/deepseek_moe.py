r"""DeepSeekMoE: fine-grained routed experts plus shared experts vs a dense FFN.

Paper: Dai et al. 2024, "DeepSeekMoE: Towards Ultimate Expert Specialization in
Mixture-of-Experts Language Models" (arXiv 2401.06066); routing as in DeepSeek-V3
(arXiv 2412.19437): sigmoid affinities, top-k gates normalized over the k,
auxiliary-loss-free balancing.

Arms (all with the same attention and the same active FFN width F): dense (d_ff=F),
coarse MoE (8 experts of width F, top-1), fine MoE (32 experts of width F/4, top-4),
fine + shared (32 routed of width F/4, top-3, plus 1 shared expert of width F/4).

Commands:
  python -m lattice.main --config=experiments/deepseek_moe.py:smoke --workdir=runs/dsmoe_smoke
  python -m lattice.main --config=experiments/deepseek_moe.py:quick --workdir=runs/dsmoe
  python -m lattice.main --config=experiments/deepseek_moe.py:full  --workdir=runs/dsmoe_full

Pre-registered checks (code: CHECKS; judged by lattice.run.checks on the 95% paired
t interval over the seeds, the same init seed and data order in every arm):
  1. fine + shared better than dense: CI of val_loss(moe_fine_shared) - val_loss(dense)
     entirely below 0;
  2. fine better than coarse: CI of val_loss(moe_fine) - val_loss(moe_coarse) below 0.
No best-of-N: each check names its two arms before the run. The coarse-vs-dense and
fine-vs-dense differences are reported as measured (notes), not checked.

Expected: MoE below dense in validation loss; fine below coarse (the public study:
8 experts top-1 1.141 -> 64 top-8 1.071 loss). Our numbers: to be measured (the
lead runs quick on the idle machine).

Quick budget (an estimate, not a measurement): 4 arms x 3 seeds x 500 steps of
16 x 128 tokens. The best tokens/s the earlier single-seed quick result recorded
(results/deepseek_moe: dense 22K, MoE arms 15-18K tokens/s) gives 47-68 s of steps
per run, ~700 s for the 12 runs, plus compile and eval (~10 s each assumed idle):
~820 s summed arm time. Here, under load ~14 on 2 cores, dense took 0.86 s a step.
"""

from __future__ import annotations

import ml_collections

from lattice import experiment
from lattice.run import checks

NAME = 'deepseek_moe'
PAPER = {'title': 'DeepSeekMoE: Towards Ultimate Expert Specialization in '
                  'Mixture-of-Experts Language Models', 'arxiv': '2401.06066'}
CLAIM = ('at equal activated parameters and tokens, an MoE beats the dense model, and '
         'splitting experts finer (more, narrower experts, more of them active) helps '
         'further; DeepSeekMoE also isolates shared experts, whose effect at small '
         'scale we report as measured (a public TinyStories study saw no gain from '
         'them; see PAPERS.md).')
CHECKS = (checks.better('moe_fine_shared', 'dense'),
          checks.better('moe_fine', 'moe_coarse'))


def arms(width: int) -> list[dict]:
  moe = {'model.ffn.kind': 'moe', 'model.ffn.router': 'sigmoid',
         'model.ffn.bias_rate': 1e-3}
  return [
      dict(name='dense', overrides={'model.ffn.d_ff': width}),
      dict(name='moe_coarse', overrides={**moe, 'model.ffn.n_experts': 8,
                                         'model.ffn.top_k': 1,
                                         'model.ffn.expert_d_ff': width}),
      dict(name='moe_fine', overrides={**moe, 'model.ffn.n_experts': 32,
                                       'model.ffn.top_k': 4,
                                       'model.ffn.expert_d_ff': width // 4}),
      dict(name='moe_fine_shared', overrides={**moe, 'model.ffn.n_experts': 32,
                                              'model.ffn.top_k': 3,
                                              'model.ffn.n_shared': 1,
                                              'model.ffn.expert_d_ff': width // 4}),
  ]


def _config(d_model, n_layers, width, seq_len, batch, steps, lr, seeds=(0, 1, 2)):
  c = experiment.lm_config(d_model, n_layers, max(d_model // 32, 2), seq_len, batch,
                           steps, lr)
  c.arms = arms(width)
  c.seeds = list(seeds)
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return experiment.pick_mode(arg, {
      'smoke': lambda: _config(d_model=32, n_layers=1, width=64, seq_len=32, batch=8,
                               steps=8, lr=3e-3, seeds=(0,)),
      'quick': lambda: _config(d_model=96, n_layers=2, width=256, seq_len=128, batch=16,
                               steps=500, lr=3e-3),
      'full': lambda: _config(d_model=512, n_layers=8, width=1408, seq_len=512,
                              batch=64, steps=20_000, lr=1e-3),
  })


def run(config: ml_collections.ConfigDict, workdir: str) -> experiment.Result:
  arm_results, _ = experiment.run_arms(config, workdir)
  loss = {a.name: a.metrics['val_loss']['mean'] for a in arm_results}
  results = checks.judge_all(CHECKS, arm_results)
  reported = [checks.ci_line(a, b, arm_results) for a, b in (
      ('moe_coarse', 'dense'), ('moe_fine', 'dense'), ('moe_fine_shared', 'moe_fine'))]
  plots = [experiment.plot_bars(
      f'{workdir}/val_loss.png', loss,
      {a.name: a.metrics['val_loss']['std'] for a in arm_results},
      ylabel='validation loss (nats/byte)', title='equal active parameters')]
  return experiment.finish(
      __name__, config, workdir, arms=arm_results, checks=results,
      headline={'paper': 'MoE > dense at equal compute; finer experts better',
                'ours': f'dense {loss["dense"]:.3f}, coarse {loss["moe_coarse"]:.3f}, '
                        f'fine {loss["moe_fine"]:.3f}, fine+shared '
                        f'{loss["moe_fine_shared"]:.3f} (mean over '
                        f'{len(config.seeds)} seeds)'},
      plots=plots,
      notes='Reported as measured, not pre-registered (no verdict drawn):\n\n'
            + '\n'.join(f'- {line}' for line in reported))
