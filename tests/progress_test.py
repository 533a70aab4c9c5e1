"""The progress bar into a log file: a line per LOG_REDRAW_S seconds, not per step
(issue: the quickstart's stderr log grew to ~220 KB, one redraw per step)."""

import io

from lattice.train import recorder


class _Tty(io.StringIO):
  def isatty(self):
    return True


def _steps(stream, n=1200):
  bar = recorder.progress_bar(n, 0, True, file=stream)
  for i in range(n):
    recorder.advance_bar(bar, 2.0 - i / n, 5000.0)
  bar.close()
  return stream.getvalue()


def test_a_log_file_gets_a_few_redraws_not_one_per_step():
  log = _steps(io.StringIO())
  # First draw, final close, and nothing between within LOG_REDRAW_S seconds.
  assert log.count('\r') <= 4, log
  assert len(log) < 2_000
  assert '1200/1200' in log and 'loss=' in log and 'tok_s=5000' in log


def test_a_terminal_still_gets_a_live_bar():
  out = _steps(_Tty(), n=50)
  assert '50/50' in out and 'loss=' in out


def test_disabled_bar_is_none():
  assert recorder.progress_bar(10, 0, False) is None
