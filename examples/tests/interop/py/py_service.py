"""Runs a real dispatcherd service (dispatcherd.run_service) for the interop tests.

Parameters come as JSON in DISPATCHERD_INTEROP: {"pg": {psycopg connect kwargs}, "channel": ...,
"node_id": ...}. Tasks: interop_tasks. Logs go to stderr; the line `dispatcherd-interop: ready`
is printed on stdout once the service LISTENs on its channel. When stdin reaches its end (the test
that started the service is gone) the service stops as on SIGTERM.
"""

import logging
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if __name__ == '__main__':
    logging.basicConfig(level=os.environ.get('DISPATCHERD_INTEROP_LOG', 'INFO'), stream=sys.stderr,
                        format='%(asctime)s %(process)d %(name)s %(levelname)s %(message)s')

    import dispatcherd
    from dispatcherd.config import setup
    from dispatcherd.service.main import DispatcherMain

    import interop_settings

    setup(config=interop_settings.dispatcherd_config(interop_settings.from_env()))
    import interop_tasks  # noqa: F401  (registers the tasks)

    # Tell the test when the brokers LISTEN: DispatcherMain calls connected_callback then.
    original = DispatcherMain.connected_callback

    async def connected_callback(self, producer):
        await original(self, producer)
        print('dispatcherd-interop: ready', flush=True)

    DispatcherMain.connected_callback = connected_callback

    def stop_at_stdin_eof():
        sys.stdin.buffer.read()
        os.kill(os.getpid(), signal.SIGTERM)

    if os.environ.get('DISPATCHERD_INTEROP_WATCH_STDIN') == '1':
        threading.Thread(target=stop_at_stdin_eof, name='stdin-watch', daemon=True).start()
    dispatcherd.run_service()
