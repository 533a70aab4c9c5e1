r"""Composition: ternary weights x fine-grained MoE x multi-token heads in one model.

Paper: no single paper. The factors come from BitNet b1.58 (Ma et al. 2024, arXiv
2402.17764), DeepSeekMoE / DeepSeek-V3 (arXiv 2401.06066, 2412.19437) and multi-token
prediction with self-speculative decoding (Gloeckle et al. 2024, arXiv 2404.19737);
the early-fusion factor from native multimodal models (arXiv 2504.07951).

Arms: a 2x2x2 factorial on the stdlib code corpus, {float, b1.58 ternary}
(model.linear.kind) x {dense, MoE: 16 quarter-width experts, top-3 + 1 shared, sigmoid
router with loss-free balancing, so the active FFN width equals the dense one}
(model.ffn.kind) x {next token, 2 parallel heads} (model.mtp.kind, n=2), and a 2x2
{float, b1.58} x {dense, MoE} on early-fusion image+text data (the shapes task;
the multimodal family does not combine with MTP heads, so that factor is crossed
with the other two only). Every arm trains for the same FLOP budget (active
parameters x tokens, `flops_budget`: the float dense next-token arm's steps), so a
costlier arm sees fewer tokens. On an accelerator an arm's seeds train together in one
vmapped step (the committed CPU quick run vmapped them too; CPU gains nothing). The MTP
arms' second head drafts for greedy self-speculative decoding (batch 1), timed
against plain greedy decoding of the same model.

Commands:
  python -m lattice.main --config=experiments/composition.py:smoke --workdir=runs/composition_smoke
  python -m lattice.main --config=experiments/composition.py:quick --workdir=runs/composition
  python -m lattice.main --config=experiments/composition.py:full  --workdir=runs/composition_full
The same text factorial from the command line, on any experiment file:
  lattice sweep experiments/composition.py:quick --workdir=runs/sweep \
      --grid model.linear.kind=float,bitnet --grid model.ffn.kind=dense,moe \
      --grid model.mtp.kind=none,parallel --seeds 3

Expected: main effects of b1.58 (+ loss at this size: the paper matches float only
from ~3B parameters), MoE (- loss), MTP (+ next-token loss at small sizes, Gloeckle
Fig. 3); the questions are the interactions.
"""

from __future__ import annotations

import math

import ml_collections

from lattice import config as config_lib, experiment
from lattice.run import sweep
from lattice.decode import speculative

NAME = 'composition'
PAPER = {'title': 'BitNet b1.58 x DeepSeekMoE x multi-token prediction (composition)',
         'arxiv': '2402.17764'}
CLAIM = ('the techniques compose: at equal active training compute, MoE still lowers '
         'the loss with ternary weights (ternary does not hurt MoE more than it hurts '
         "dense), and MTP's self-speculative decoding survives ternary weights (drafts "
         'accepted as often, the same wall-clock ratio).')
TEXT_GRIDS = [('model.linear.kind', ['float', 'bitnet']),
              ('model.ffn.kind', ['dense', 'moe']),
              ('model.mtp.kind', ['none', 'parallel'])]
IMAGE_GRIDS = TEXT_GRIDS[:2]


def _moe(d_model: int) -> dict:
  """DeepSeek-V3-style MoE (as in deepseek_moe's best arm): 16 fine-grained experts,
  top-3 plus 1 shared, each a quarter of the dense FFN, so the active FFN width equals
  the dense one; sigmoid router with loss-free balancing."""
  d_ff = 64 * math.ceil(8 * d_model / 3 / 64)  # the dense FFN's (Llama rule)
  return dict(n_experts=16, top_k=3, n_shared=1, expert_d_ff=max(d_ff // 4, 1),
              router='sigmoid', bias_rate=1e-3)


def _config(d_model, n_layers, seq_len, batch, steps, lr, seeds, *, prompts=4,
            prompt_len=32, new_tokens=64, multimodal=True, image_steps=0):
  c = experiment.lm_config(d_model, n_layers, max(d_model // 16, 2), seq_len, batch,
                           steps, lr, max_len=max(seq_len, prompt_len + new_tokens + 1),
                           eval_every=max(steps // 4, 1),
                           ffn=_moe(d_model), mtp=dict(n=2))
  c.seeds = list(range(seeds))
  c.budget_steps = steps  # the float dense next-token arm's steps set the FLOP budget
  c.multimodal = multimodal
  c.image_steps = image_steps or steps
  c.prompts, c.prompt_len, c.new_tokens = prompts, prompt_len, new_tokens
  if steps < 10:  # smoke: no checkpoints, one short eval, so CI time goes to compiling
    c.checkpoint.enabled, c.train.eval_every, c.data.eval_batches = False, 0, 2
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return experiment.pick_mode(arg, {
      # Smoke: one block (compiling 8 arms is its cost; the MTP arms' 2 heads are then
      # each one block over the embeddings, no shared trunk).
      'smoke': lambda: _config(d_model=16, n_layers=1, seq_len=32, batch=8, steps=3,
                               lr=3e-3, seeds=1, prompts=1, prompt_len=8, new_tokens=8,
                               multimodal=False),
      'quick': lambda: _config(d_model=64, n_layers=3, seq_len=128, batch=16, steps=400,
                               lr=3e-3, seeds=3, image_steps=250),
      'full': lambda: _config(d_model=512, n_layers=8, seq_len=512, batch=64,
                              steps=20_000, lr=1e-3, seeds=3, prompts=16,
                              new_tokens=256),
  })


def _budget(config: ml_collections.ConfigDict, steps: int) -> float:
  """FLOPs of the baseline arm (float, dense, next token) trained for `steps`."""
  cfg = config_lib.build(config)  # the base config, before any flops_budget
  return (experiment.flops_per_token(cfg) * steps * cfg.data.batch_size
          * cfg.data.seq_len)


def _measure(config):
  def measure(cfg, out):
    if cfg.model.mtp.kind == 'none':
      return {}
    prompts = experiment.eval_prompts(cfg, config.prompts, config.prompt_len)
    spec = speculative.compare_with_plain(out.state.variables, cfg.model, prompts,
                                          config.new_tokens,
                                          repeats=1 if config.mode == 'smoke' else 3)
    return {'accepted_per_forward': float(spec['accepted_per_forward']),
            'speedup': float(spec['speedup']), 'identical': float(spec['identical'])}
  return measure


def _image_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(config.to_dict())
  c.model.frontend.kind = 'early'
  c.model.frontend.max_images = 2
  c.data.source = 'shapes'
  c.model.mtp.n = 1
  c.data.eval_batches = 8
  c.train.steps = c.image_steps
  return c


def _effect(analysis, name):
  return next(e for e in analysis['effects'] if e['effect'] == name)


def _ci_text(e) -> str:
  if math.isnan(e['lo']):
    return f'{e["mean"]:+.4f} (no CI: 1 seed)'
  return f'{e["mean"]:+.4f} [{e["lo"]:+.4f}, {e["hi"]:+.4f}]'


def _interaction_plot(path, arms, mtp_kinds) -> str:
  """val loss vs linear kind, one line per FFN kind (x MTP): parallel lines mean no
  interaction."""
  by = {tuple(a.overrides.values()): a for a in arms}
  series = {}
  for ffn in ('dense', 'moe'):
    for mtp in mtp_kinds:
      rest = (ffn, mtp) if mtp else (ffn,)
      ys = [by[(lin, *rest)].metrics['val_loss']['mean'] for lin in ('float', 'bitnet')]
      series[ffn + (f', mtp={mtp}' if mtp else '')] = ([0, 1], ys)
  return experiment.plot_series(path, series, xlabel='0 = float, 1 = b1.58 ternary',
                             ylabel='val loss (nats)',
                             title='Equal slopes = no interaction with b1.58')


def run(config: ml_collections.ConfigDict, workdir: str) -> experiment.Result:
  config = ml_collections.ConfigDict(config.to_dict())
  config.flops_budget = _budget(config, config.budget_steps)
  seeds = list(config.seeds)
  text = sweep.run_sweep(config, f'{workdir}/text', TEXT_GRIDS, seeds=seeds,
                         measure=_measure(config), title='Composition: text factorial')
  arms, an = text['arm_records'], text['analysis']
  by = {tuple(a.overrides.values()): a for a in arms}
  mean = lambda key, m: by[key].metrics[m]['mean']
  checks = []
  inter = _effect(an, 'linear.kind=bitnet x ffn.kind=moe')
  moe = _effect(an, 'ffn.kind: moe vs dense')
  checks.append(experiment.check(
      'MoE lowers val loss at equal active compute (main effect < 0, CI excludes 0)',
      moe['hi'] < 0, f'MoE vs dense: {_ci_text(moe)} nats'))
  checks.append(experiment.check(
      'ternary does not hurt MoE more than dense (b1.58 x MoE interaction not > 0)',
      not inter['lo'] > 0, f'interaction {_ci_text(inter)} nats (> 0 would mean b1.58 '
      'costs MoE more)'))
  fl, tl = ('float', 'dense', 'parallel'), ('bitnet', 'dense', 'parallel')
  fm, tm = ('float', 'moe', 'parallel'), ('bitnet', 'moe', 'parallel')
  apf = {k: mean(k, 'accepted_per_forward') for k in (fl, tl, fm, tm)}
  speed = {k: mean(k, 'speedup') for k in (fl, tl, fm, tm)}
  checks.append(experiment.check(
      'MTP drafts accepted as often with ternary weights (b1.58 >= 0.9x float tokens '
      'per forward, dense and MoE)',
      apf[tl] >= 0.9 * apf[fl] and apf[tm] >= 0.9 * apf[fm],
      f'tokens/forward dense {apf[tl]:.3f} vs {apf[fl]:.3f}, MoE {apf[tm]:.3f} vs '
      f'{apf[fm]:.3f}'))
  checks.append(experiment.check(
      'MTP speculative speedup survives ternary weights (b1.58 >= 0.9x float)',
      speed[tl] >= 0.9 * speed[fl] and speed[tm] >= 0.9 * speed[fm],
      f'speculative/plain wall clock dense {speed[tl]:.2f}x vs {speed[fl]:.2f}x, MoE '
      f'{speed[tm]:.2f}x vs {speed[fm]:.2f}x (batch 1, this machine)'))
  ident = min(mean(k, 'identical') for k in (fl, tl, fm, tm))
  checks.append(experiment.check('speculative greedy output identical to plain greedy',
                              ident == 1.0, f'min over MTP arms and seeds: {ident}'))
  plots = [_interaction_plot(f'{workdir}/interaction.png', arms, ['none', 'parallel'])]
  notes = ['**Text factorial**', '', text['table'].split('\n', 2)[2]]
  image = None
  if config.multimodal:
    image_cfg = _image_config(config)
    image_cfg.flops_budget = _budget(image_cfg, image_cfg.image_steps)
    image = sweep.run_sweep(image_cfg, f'{workdir}/image', IMAGE_GRIDS, seeds=seeds,
                            title='Composition: early-fusion factorial')
    ian = image['analysis']
    iinter = _effect(ian, 'linear.kind=bitnet x ffn.kind=moe')
    checks.append(experiment.check(
        'on early-fusion image+text data too, ternary does not hurt MoE more than dense',
        not iinter['lo'] > 0, f'interaction {_ci_text(iinter)} nats'))
    plots.append(_interaction_plot(f'{workdir}/interaction_image.png',
                                   image['arm_records'], [None]))
    notes += ['**Early-fusion factorial (image+text, no MTP)**', '',
              image['table'].split('\n', 2)[2]]
  # The sweeps' bar plots go in `plots` (the report links those), not in the notes.
  notes = '\n'.join(notes).replace('![ablation.png](ablation.png)', '').replace(
      '## Main effects and interactions', '**Main effects and interactions**')
  plots += ['text/ablation.png'] + (['image/ablation.png'] if image else [])
  tern = _effect(an, 'linear.kind: bitnet vs float')
  mtp = _effect(an, 'mtp.kind: parallel vs none')
  return experiment.finish(
      __name__, config, workdir, arms=arms + ([] if image is None else [
          experiment.Arm(**{**a.__dict__, 'name': f'image:{a.name}'})
          for a in image['arm_records']]),
      checks=checks,
      headline={'paper': 'each technique works alone (its own paper); no composed '
                         'numbers published',
                'ours': f'main effects (nats): b1.58 {tern["mean"]:+.3f}, MoE '
                        f'{moe["mean"]:+.3f}, MTP {mtp["mean"]:+.3f}; b1.58 x MoE '
                        f'{inter["mean"]:+.3f}; MTP tokens/forward '
                        f'{apf[fl]:.2f} float vs {apf[tl]:.2f} b1.58'},
      plots=plots,
      notes=notes)
