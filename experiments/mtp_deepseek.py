r"""DeepSeek-V3 sequential multi-token prediction: depth-1 MTP module, λ schedule.

Paper: DeepSeek-AI 2024, "DeepSeek-V3 Technical Report" (arXiv 2412.19437), §2.2 and
§5.4.3.

Arms: the plain decoder (model.mtp.kind='none') and the same decoder plus one MTP
module (model.mtp.kind='sequential', depth 1, λ = 0.3 then 0.1 from 68% of the steps,
DeepSeek's 10T of 14.8T tokens) on the stdlib code corpus. The MTP arm's module drafts
for self-speculative greedy decoding (lattice/decode/speculative.py): the acceptance
rate is accepted tokens per forward - 1, and the speedup is timed against plain greedy
decoding of the same model in the same process (batch 1).

Commands:
  python -m lattice.main --config=experiments/mtp_deepseek.py:smoke --workdir=runs/mtp_deepseek_smoke
  python -m lattice.main --config=experiments/mtp_deepseek.py:quick --workdir=runs/mtp_deepseek
  python -m lattice.main --config=experiments/mtp_deepseek.py:full  --workdir=runs/mtp_deepseek_full

Expected (paper, 671B model): main loss not worse; second-token acceptance 85-90%;
1.8x tokens/s. A small CPU model accepts far fewer drafts, and its per-forward cost
is dominated by overhead, so the speedup is not expected to reproduce at that size.
"""

from __future__ import annotations

import ml_collections

from lattice import experiment
from lattice.decode import speculative

NAME = 'mtp_deepseek'
PAPER = {'title': 'DeepSeek-V3 Technical Report', 'arxiv': '2412.19437'}
CLAIM = ('one sequential MTP module (D = 1: [RMSNorm(h); RMSNorm(Emb(t+1))] -> '
         'projection -> transformer block, sharing embedding and output head) trained '
         'with weight λ = 0.3 (0.1 for the last part of training) does not hurt the '
         "main model's next-token loss (it improves it at scale), and used as a "
         'drafter its second-token prediction is accepted 85-90% of the time, giving '
         '1.8x decoding tokens per second.')
LAM, LAM_LATE, SWITCH = 0.3, 0.1, 10 / 14.8  # §4.2: 0.3 for 10T tokens, 0.1 for 4.8T


def _config(d_model, n_layers, seq_len, batch, steps, lr, *, prompts=4, prompt_len=32,
            new_tokens=128):
  c = experiment.lm_config(d_model, n_layers, max(d_model // 16, 2), seq_len, batch, steps,
                           lr, max_len=max(seq_len, prompt_len + new_tokens + 1))
  c.arms = [
      dict(name='next_token', overrides={}),
      dict(name='mtp_d1', overrides={
          'model.mtp.kind': 'sequential', 'model.mtp.depth': 1, 'model.mtp.lam': LAM,
          'model.mtp.lam_late': LAM_LATE,
          'model.mtp.lam_switch_step': max(int(SWITCH * steps), 1)}),
  ]
  c.prompts, c.prompt_len, c.new_tokens = prompts, prompt_len, new_tokens
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return experiment.pick_mode(arg, {
      'smoke': lambda: _config(d_model=32, n_layers=1, seq_len=32, batch=8, steps=4,
                               lr=3e-3, prompts=1, prompt_len=8, new_tokens=8),
      'quick': lambda: _config(d_model=64, n_layers=2, seq_len=128, batch=16, steps=400,
                               lr=3e-3),
      'full': lambda: _config(d_model=512, n_layers=8, seq_len=512, batch=64,
                              steps=20_000, lr=1e-3, prompts=16, new_tokens=256),
  })


def _measure(config):
  def measure(cfg, out):
    if cfg.model.mtp.kind != 'sequential':
      return {}
    prompts = experiment.eval_prompts(cfg, config.prompts, config.prompt_len)
    spec = speculative.compare_with_plain(out.state.variables, cfg.model, prompts,
                                          config.new_tokens)
    return {**{k: float(v) for k, v in spec.items()},
            'acceptance': float(spec['accepted_per_forward']) - 1.0}
  return measure


def run(config: ml_collections.ConfigDict, workdir: str) -> experiment.Result:
  arms, _ = experiment.run_arms(config, workdir, measure=_measure(config))
  by = {a.name: {k: v['mean'] for k, v in a.metrics.items()} for a in arms}
  base, mtp = by['next_token'], by['mtp_d1']
  checks = [
      experiment.check('main-token validation loss not worse with the MTP module',
                    mtp['val_loss'] <= 1.01 * base['val_loss'],
                    f'val loss {mtp["val_loss"]:.4f} (MTP D=1) vs {base["val_loss"]:.4f} '
                    f'(next-token only); needs <= 1.01x'),
      experiment.check('second-token acceptance 85-90% (paper)',
                    mtp['acceptance'] >= 0.85,
                    f'acceptance {mtp["acceptance"]:.3f} ({config.prompts} code prompts x '
                    f'{config.new_tokens} tokens, greedy)'),
      experiment.check('speculative greedy output identical to greedy decoding',
                    mtp['identical'] == 1.0, 'every prompt matched token for token'),
      experiment.check('1.8x tokens/s from speculative use (paper)',
                    mtp['speedup'] >= 1.8,
                    f'{mtp["speedup"]:.2f}x ({mtp["spec_tokens_per_s"]:.0f} vs '
                    f'{mtp["plain_tokens_per_s"]:.0f} tokens/s, batch 1)'),
  ]
  return experiment.finish(
      __name__, config, workdir, arms=arms,
      checks=checks,
      headline={'paper': 'loss not worse; 85-90% acceptance; 1.8x TPS',
                'ours': f'val loss {mtp["val_loss"]:.3f} vs {base["val_loss"]:.3f}; '
                        f'acceptance {mtp["acceptance"]:.2f}; {mtp["speedup"]:.2f}x'})
