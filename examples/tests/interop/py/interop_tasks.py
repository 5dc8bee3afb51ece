"""Tasks of the Python dispatcherd service used by the interop tests.

Registered with dispatcherd's own decorator, so their task names are `interop_tasks.<name>`.
Each one leaves a marker file that the Rust test waits for: the proof that the task ran in a
dispatcherd worker.
"""

import json
import os
import time

from dispatcherd.publish import task


def _write_atomically(path: str, content: str) -> None:
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write(content)
    os.replace(tmp, path)


@task(decorate=False)
def write_marker(path, content='ran'):
    """Writes `content` to the file `path`."""
    _write_atomically(path, content)
    return content


@task(decorate=False)
def record_call(path, *args, **kwargs):
    """Writes what it was called with (as JSON) to the file `path`."""
    _write_atomically(path, json.dumps({'args': list(args), 'kwargs': kwargs, 'pid': os.getpid()}))


@task(decorate=False)
def sleep_then_mark(seconds, path, padding=None):
    """Writes `started` to `path`, sleeps `seconds`, then writes `done`. `padding` only makes
    the message (and so the `running` reply that shows it) as large as a test needs."""
    _write_atomically(path, 'started')
    time.sleep(seconds)
    _write_atomically(path, 'done')
