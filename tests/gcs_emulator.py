"""A local Google Cloud Storage emulator for tests: nothing leaves 127.0.0.1.

`running()` starts `gcp-storage-emulator` (PyPI) on a free loopback port with an
in-memory bucket and points every GCS client lattice uses at it — google-cloud-
storage and gcsfs (hence etils.epath) through STORAGE_EMULATOR_HOST, tensorstore
(hence Orbax) through TENSORSTORE_GCS_HTTP_URL — with anonymous credentials and the
GCE metadata server set to a dead loopback port. gcsfs's bucket-type probe (a gRPC
call the emulator does not serve) is switched off.

By hand, the same for a shell:
  python -m gcp_storage_emulator start --host 127.0.0.1 --port 9023 --in-memory \\
      --default-bucket lattice-test &
  eval "$(python -m tests.gcs_emulator --port 9023)"
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import socket
import subprocess
import sys
import time


def environment(port: int) -> dict[str, str]:
  url = f'http://127.0.0.1:{port}'
  dead = '127.0.0.1:9'   # discard port: nothing answers, so no metadata server
  return {'STORAGE_EMULATOR_HOST': url, 'TENSORSTORE_GCS_HTTP_URL': url,
          'GCE_METADATA_HOST': dead, 'GCE_METADATA_IP': dead,
          'GCE_METADATA_ROOT': dead, 'NO_GCE_CHECK': 'true',
          'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false'}


def no_retries_on_not_implemented() -> None:
  """Makes gcsfs give up at once on HTTP 501 (Not Implemented), in this process.

  The emulator answers 501 to GCS's objects.moveTo. gcsfs counts 501 among its
  transient codes (gcsfs.retry.errs: 500-504) and retries 5 times, sleeping
  1 + 2 + 4 + 8 + 16 s plus jitter (gcsfs.retry.retry_request), before it falls back
  to copy + delete: ~33 s of sleep for every `fs.mv` (a checkpoint moved aside). A
  501 is permanent, so the fallback now runs at once; real GCS implements moveTo.
  """
  from gcsfs import retry  # pylint: disable=g-import-not-at-top
  retry.errs.difference_update({501, '501'})


def _refresh_google_auth() -> None:
  """google-auth reads GCE_METADATA_* and NO_GCE_CHECK once, at import: if it was
  imported before `running()` set them (any earlier import of orbax, gcsfs, ...), it
  would probe 169.254.169.254 and wait out its timeouts (minutes) on every client."""
  module = sys.modules.get('google.auth.compute_engine._metadata')
  if module is not None:
    importlib.reload(module)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# `python -m gcp_storage_emulator` with a longer listen backlog. The emulator serves
# from one http.server.HTTPServer, whose backlog is socketserver's default of 5
# (TCPServer.request_queue_size). gcsfs and tensorstore open dozens of connections at
# once (a checkpoint's objects, an `fs.mv` of a folder); the kernel drops the SYNs
# past the backlog and the clients resend them only after 1, 3, 7... s (TCP's SYN
# back-off). Measured on the loaded build machine, a 100-object `fs.mv`: 112 s and
# 840 dropped SYNs (nstat TcpExtListenOverflows) with a backlog of 5; 7 s and none
# with 1024.
_LAUNCH = ('import socketserver, sys; socketserver.TCPServer.request_queue_size = 1024; '
           'from gcp_storage_emulator.__main__ import main; sys.exit(main())')


@contextlib.contextmanager
def running(bucket: str = 'lattice-test'):
  """Starts the emulator, sets the environment (restored after), yields the port."""
  port = _free_port()
  proc = subprocess.Popen(
      [sys.executable, '-c', _LAUNCH, 'start', '--host', '127.0.0.1',
       '--port', str(port), '--in-memory', '--default-bucket', bucket],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  saved = {k: os.environ.get(k) for k in environment(port)}
  try:
    for _ in range(200):
      try:
        socket.create_connection(('127.0.0.1', port), 0.2).close()
        break
      except OSError:
        time.sleep(0.05)
    else:
      raise RuntimeError('gcp-storage-emulator did not start')
    os.environ.update(environment(port))
    _refresh_google_auth()
    no_retries_on_not_implemented()
    yield port
  finally:
    proc.terminate()
    proc.wait(10)
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description='print export lines for a running emulator')
  parser.add_argument('--port', type=int, default=9023)
  for key, value in environment(parser.parse_args().port).items():
    print(f'export {key}={value}')
