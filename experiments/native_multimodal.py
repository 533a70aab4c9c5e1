r"""Native multimodal models: early fusion vs late fusion, and modality-aware MoE.

Paper: Shukor et al. 2025, "Scaling Laws for Native Multimodal Models" (arXiv
2504.07951); late-fusion adapter from LLaVA-1.5 (arXiv 2310.03744).

Arms: early and late fusion at three sizes, each late arm given the same training
FLOPs as its early arm (fewer steps, since the encoder costs FLOPs); early-fusion MoE
(8 experts of the dense FFN width, top-1) with learned and with hard modality routing
at the middle size and the middle budget. Data: procedural shapes images with
captions, interleaved question/answer documents and stdlib text (45/45/10).

Commands:
  python -m lattice.main --config=experiments/native_multimodal.py:smoke --workdir=runs/nmm_smoke
  python -m lattice.main --config=experiments/native_multimodal.py:quick --workdir=runs/nmm
  python -m lattice.main --config=experiments/native_multimodal.py:full  --workdir=runs/nmm_full

Expected: early <= late loss at the smallest budget; fitted exponents within 25%;
early's step memory and total time at matched compute below late's; MoE below dense.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import ml_collections
import numpy as np

from lattice import experiment
from lattice.data import tokenizer
from lattice import model as model_lib
from lattice.data import interleaved
from lattice.multimodal import analysis
from lattice.train import loop

NAME = 'native_multimodal'
PAPER = {'title': 'Scaling Laws for Native Multimodal Models', 'arxiv': '2504.07951'}
CLAIM = ('trained from scratch at equal compute, early fusion (patches linearly '
         'projected into the decoder) is at least as good as late fusion (a ViT '
         'encoder plus an adapter, its compute counted) at small compute, with almost '
         'the same scaling exponent (L ~ C^-0.0492 vs C^-0.0494), while training '
         'faster and with less memory; an MoE (8 experts, top-1) beats dense early '
         'fusion at equal active compute, learned routing beats hard modality routing, '
         'and experts become near-unimodal.')


def _config(sizes, seq_len, batch, lr, max_images, eval_batches, patch=8,
            checkpoints=True):
  """sizes: (d_model, n_layers, early steps, encoder width, encoder layers) each."""
  c = experiment.lm_config(sizes[0][0], sizes[0][1], 2, seq_len, batch, sizes[0][2], lr,
                           frontend=dict(kind='early', max_images=max_images,
                                         patch_size=patch))
  c.data.eval_batches = eval_batches
  c.data.source = 'shapes'
  c.checkpoint.enabled = checkpoints
  c.sizes = [list(s) for s in sizes]
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return experiment.pick_mode(arg, {
      # Smoke: one size only (CI time); the fits then use the runs' eval histories.
      'smoke': lambda: _config(sizes=[(16, 1, 4, 16, 1)], seq_len=96, batch=8, lr=3e-3,
                               max_images=2, eval_batches=1, patch=16,
                               checkpoints=False),
      'quick': lambda: _config(sizes=[(32, 2, 150, 32, 1), (48, 2, 250, 32, 1),
                                (64, 2, 400, 48, 1)],
                               seq_len=128, batch=16, lr=3e-3, max_images=2,
                               eval_batches=8),
      'full': lambda: _config(sizes=[(256, 4, 4000, 128, 2), (384, 6, 6000, 192, 3),
                               (512, 8, 8000, 256, 4)],
                              seq_len=512, batch=64, lr=1e-3, max_images=8,
                              eval_batches=32),
  })


def _size_overrides(d, layers, steps, enc_d, enc_layers, kind):
  return {'model.d_model': d, 'model.n_layers': layers, 'model.frontend.kind': kind,
          'model.frontend.enc_d_model': enc_d, 'model.frontend.enc_layers': enc_layers,
          'train.steps': steps, 'optimizer.warmup_steps': max(steps // 20, 1),
          'train.eval_every': max(steps // 4, 1), 'checkpoint.every': max(steps // 2, 1)}


def make_arms(config) -> list[dict]:
  """Early and compute-matched late arms per size, then the two MoE arms."""
  arms = []
  for i, (d, layers, steps, enc_d, enc_layers) in enumerate(config.sizes):
    early = _size_overrides(d, layers, steps, enc_d, enc_layers, 'early')
    late = _size_overrides(d, layers, steps, enc_d, enc_layers, 'late')
    ratio = (experiment.flops_per_token(experiment.arm_config(config, early, 0))
             / experiment.flops_per_token(experiment.arm_config(config, late, 0)))
    late = _size_overrides(d, layers, max(round(steps * ratio), 2), enc_d, enc_layers,
                           'late')
    arms += [dict(name=f'early_{i}', overrides=early), dict(name=f'late_{i}', overrides=late)]
  mid = arms[2 * (len(config.sizes) // 2)]['overrides']
  # Switch-style balance loss (1e-2, Fedus et al. 2021) keeps top-1 routing from collapsing.
  moe = {**mid, 'model.ffn.kind': 'moe', 'model.ffn.n_experts': 8, 'model.ffn.top_k': 1,
         'model.ffn.aux_loss': 1e-2,
         'model.ffn.expert_d_ff': experiment.arm_config(config, mid, 0).model.d_ff}
  arms += [dict(name='moe_learned', overrides=moe),
           dict(name='moe_hard', overrides={**moe, 'model.frontend.modality_routing': 'hard'})]
  return arms


def _evals(run_dir: Path) -> list[dict]:
  """Every eval point a run logged (metrics.jsonl spans resumed sessions)."""
  rows = [json.loads(l) for l in (run_dir / 'metrics.jsonl').read_text().splitlines()]
  return list({r['step']: r for r in rows if 'val_loss' in r}.values())


def run(config: ml_collections.ConfigDict, workdir: str) -> experiment.Result:
  config.arms = make_arms(config)
  extras = []  # per arm (one seed): image shares and expert loads, not scalars

  def measure(cfg, out):
    batches = interleaved.make_eval_batches(cfg, None)
    ev = model_lib.summarize_eval(loop.eval_sums(out.setup, out.state, batches),
                                  detail=True)
    extras.append({'image_share': ev.get('image_share'), 'batches': batches,
                   'expert_load': ev.get('expert_load'), 'run': (out.setup, out.state),
                   'fpt': out.metrics['flops_per_token'],
                   'step_tokens': cfg.data.batch_size * cfg.data.seq_len})
    return {'qa_accuracy': ev['qa_accuracy'], 'steps': out.metrics['steps'],
            'flops_per_token': out.metrics['flops_per_token'],
            'step_memory_mb': analysis.step_memory_bytes(out.setup, batches[0]) / 2**20,
            'image_token_fraction': float(np.mean([b['modality'].mean() for b in batches]))}

  arms, _ = experiment.run_arms(config, workdir, measure=measure)
  by = {a.name: {k: v['mean'] for k, v in a.metrics.items()} for a in arms}
  ex = dict(zip((a.name for a in arms), extras))
  n = len(config.sizes)
  dense = f'early_{n // 2}'  # the MoE arms' dense counterpart
  curves, fits = {}, {}
  for kind in ('early', 'late'):
    pts = [(e['fpt'] * h['step'] * e['step_tokens'], h['val_loss'])
           for i in range(n) for e in [ex[f'{kind}_{i}']]
           for h in _evals(Path(workdir) / f'{kind}_{i}' / f'seed_{config.seeds[0]}')]
    fits[kind] = analysis.fit_power_law(pts)
    curves[f'{kind} (measured)'] = tuple(zip(*sorted(pts)))
    cs = np.geomspace(min(p[0] for p in pts), max(p[0] for p in pts), 30)
    if np.isfinite(fits[kind]['alpha']):
      curves[f'{kind} fit: alpha={fits[kind]["alpha"]:.3f}'] = (cs, analysis.predict(fits[kind], cs))
  aE, aL = fits['early']['alpha'], fits['late']['alpha']
  loss = {k: v['val_loss'] for k, v in by.items()}
  for i in range(n):  # step time: early and late timed in turn (shared-machine noise)
    pair = [ex[f'{kind}_{i}'] for kind in ('early', 'late')]
    secs = analysis.interleaved_step_seconds([e['run'] for e in pair], pair[0]['batches'][0])
    for kind, sec in zip(('early', 'late'), secs):
      timed = {'step_s': sec, 'train_time_s': sec * by[f'{kind}_{i}']['steps']}
      by[f'{kind}_{i}'].update(timed)
      next(a for a in arms if a.name == f'{kind}_{i}').metrics.update(experiment.aggregate([timed]))
  time_ok = all(by[f'early_{i}']['train_time_s'] < by[f'late_{i}']['train_time_s'] for i in range(n))
  mem_ok = all(by[f'early_{i}']['step_memory_mb'] < by[f'late_{i}']['step_memory_mb'] for i in range(n))
  fmt = lambda key, f='{:.3g}': ', '.join(
      f'{by[f"early_{i}"][key]:.3g} vs {by[f"late_{i}"][key]:.3g}' for i in range(n))
  shares = {name: np.asarray(ex[name]['image_share']) for name in ('moe_learned', 'moe_hard')}
  loads = np.asarray(ex['moe_learned']['expert_load'])
  nmi = [analysis.modality_nmi(l, s * l) for l, s in zip(loads, shares['moe_learned'])]
  tok = tokenizer.ByteTokenizer()
  answers = collections.Counter(
      tok.decode(b['targets'][r][b['answer_id'][r] == a])
      for b in ex['early_0']['batches'] for r in range(b['targets'].shape[0])
      for a in set(b['answer_id'][r][b['answer_id'][r] >= 0].tolist()))
  prior = max(answers.values(), default=0) / max(sum(answers.values()), 1)
  best_qa = max(by[k]['qa_accuracy'] for k in by)
  checks = [
      experiment.check('early fusion no worse than late at the smallest compute',
                    loss['early_0'] <= loss['late_0'],
                    f'val loss early {loss["early_0"]:.4f} vs late {loss["late_0"]:.4f} at '
                    f'{arms[0].train_flops:.3g} vs {arms[1].train_flops:.3g} FLOPs'),
      experiment.check('scaling exponents close (within 25%)',
                    np.isfinite(aE) and np.isfinite(aL) and abs(aE - aL) <= 0.25 * max(aE, aL),
                    f'alpha early {aE:.4f} vs late {aL:.4f} (paper 0.0492 vs 0.0494); fits '
                    f'{fits}'),
      experiment.check('early fusion trains in less time at matched compute', time_ok,
                    f'train seconds (steps x best step time, early and late timed in turn) '
                    f'early vs late per budget: {fmt("train_time_s")}; step s {fmt("step_s")}'),
      experiment.check('early fusion uses less step memory at matched compute', mem_ok,
                    f'compiled step memory MB early vs late: {fmt("step_memory_mb")}'),
      experiment.check('MoE (8 experts, top-1) beats dense early fusion at equal active compute',
                    loss['moe_learned'] < loss[dense],
                    f'val loss MoE {loss["moe_learned"]:.4f} vs dense {loss[dense]:.4f}'),
      experiment.check('learned routing beats hard modality routing',
                    loss['moe_learned'] < loss['moe_hard'],
                    f'val loss learned {loss["moe_learned"]:.4f} vs hard {loss["moe_hard"]:.4f}'),
      experiment.check('learned experts near-unimodal in the first and last layers (NMI > 0.5)',
                    nmi[0] > 0.5 and nmi[-1] > 0.5,
                    f'modality/expert NMI per layer {[round(x, 3) for x in nmi]} (hard routing: 1)'),
      experiment.check('question answering above the most-common-answer prior',
                    best_qa > prior,
                    f'QA exact match per arm {dict((k, round(v["qa_accuracy"], 3)) for k, v in by.items())}; '
                    f'prior {prior:.3f} over {sum(answers.values())} answers'),
  ]
  frac = by['moe_learned']['image_token_fraction']
  plots = [
      experiment.plot_series(f'{workdir}/loss_vs_compute.png', curves, xlabel='train FLOPs',
                          ylabel='val loss (text tokens)', logx=True, logy=True,
                          title='early vs late fusion, iso-FLOP'),
      experiment.plot_series(f'{workdir}/expert_image_share.png', {
          **{f'{name} layer {l}': (np.arange(len(s)), s) for name in shares
             for l, s in enumerate(shares[name])},
          'image token fraction': ([0, len(shares['moe_learned'][0]) - 1], [frac, frac])},
          xlabel='expert', ylabel='share of its tokens that are image tokens',
          title='per-layer, per-expert modality share'),
      experiment.plot_bars(f'{workdir}/moe_loss.png', {k: loss[k] for k in (dense, 'moe_learned', 'moe_hard')},
                        None, ylabel='val loss', title='dense vs MoE (equal active compute)'),
  ]
  return experiment.finish(
      __name__, config, workdir, arms=arms,
      checks=checks,
      headline={'paper': 'EF C^-0.0492 vs LF C^-0.0494; EF better at small compute, faster, '
                         'less memory; MoE > dense; learned > hard routing',
                'ours': f'alpha EF {aE:.3f} vs LF {aL:.3f}; loss at smallest budget EF '
                        f'{loss["early_0"]:.3f} vs LF {loss["late_0"]:.3f}; MoE '
                        f'{loss["moe_learned"]:.3f} vs dense {loss[dense]:.3f}; hard '
                        f'{loss["moe_hard"]:.3f}'},
      plots=plots,
      notes=f'Image shares per layer/expert: {dict((k, v.round(3).tolist()) for k, v in shares.items())}. '
            f'Compute counts the image path per patch slot (multimodal/flops.py).')

