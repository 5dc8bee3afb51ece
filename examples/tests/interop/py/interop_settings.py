"""dispatcherd settings (config version 2) for the interop tests, built from what the Rust test
passes: the psycopg connection keywords of the test's fresh database, the channel, the node id."""

import json
import os


def from_env() -> dict:
    """The test passes its parameters as JSON in DISPATCHERD_INTEROP (see interop/main.rs)."""
    return json.loads(os.environ['DISPATCHERD_INTEROP'])


def dispatcherd_config(params: dict) -> dict:
    channel = params['channel']
    return {
        'version': 2,
        'brokers': {
            'pg_notify': {
                # keyword arguments of psycopg.Connection.connect: host, port, user, dbname, ...
                'config': params['pg'],
                'channels': [channel],
                'default_publish_channel': channel,
            },
        },
        'producers': {'ControlProducer': {}},
        'service': {
            'main_kwargs': {'node_id': params.get('node_id')},
            'pool_kwargs': {'min_workers': 1, 'max_workers': 2},
            'process_manager_kwargs': {'preload_modules': ['interop_tasks']},
        },
        'publish': {'default_broker': 'pg_notify'},
        'worker': {},
    }
