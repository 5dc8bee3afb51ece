"""dispatcherd's own publishing and control client, driven by the interop tests.

Parameters come as JSON in DISPATCHERD_INTEROP ({"pg": {...}, "channel": ...}); the operation as
arguments. Prints one JSON document on stdout; logs go to stderr.

  submit TASK [--args JSON] [--kwargs JSON] [--timeout S] [--on-duplicate MODE] [--delay S] [--bind]
      dispatcherd.publish.submit_task with a stub callable registered (with dispatcherd's @task
      decorator) under the name TASK, so that dispatcherd builds the message exactly as for its
      own tasks. Prints {"message": <the body sent>, "queue": ..., "chunks": <pieces on the wire>}.
  publish MESSAGE
      The pg_notify broker's publish_message (it chunks large messages). Prints {"queue", "chunks"}.
  control COMMAND [--data JSON] [--expected N] [--timeout S] [--async | --no-reply]
      dispatcherd.control.Control(...).control_with_reply (acontrol_with_reply with --async).
      Prints the list of replies. With --no-reply: Control.control, fire and forget (no
      reply_to); prints {"sent": true}.
  enqueue TASK [--args JSON] [--kwargs JSON] [--priority N] [--run-in S] [--unique-key KEY]
          [--schema NAME] [--rollback]
      Enqueues a job on the Rust durable queue from Python: the message is the body dispatcherd
      builds for its own tasks (DispatcherMethod.get_async_body of a stub named TASK), passed
      with psycopg to SELECT <schema>.enqueue(queue, message, now() + run_in, priority,
      unique_key) in a transaction that is committed (rolled back with --rollback). Prints
      {"message": <the body>, "id": <the job id>, "committed": bool}.
  write-config PATH
      Writes the dispatcherd settings (YAML, here in its JSON subset) for dispatcherd's own CLI
      (`dispatcherctl --config PATH ...`). Prints {"path": PATH}.
"""

import argparse
import asyncio
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import interop_settings  # noqa: E402


def stub_for(name: str):
    """A callable whose dispatcherd task name (module.qualname) is `name`; it never runs here."""
    module, _, qualname = name.rpartition('.')
    if not module:
        raise SystemExit(f'task name {name!r} has no module part; dispatcherd names are module.function')

    def stub(*args, **kwargs):
        raise RuntimeError(f'{name} runs in the Rust service')

    stub.__module__ = module
    stub.__qualname__ = qualname
    stub.__name__ = qualname
    return stub


def main() -> None:
    logging.basicConfig(level=os.environ.get('DISPATCHERD_INTEROP_LOG', 'WARNING'), stream=sys.stderr)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest='op', required=True)
    p = sub.add_parser('submit')
    p.add_argument('task')
    p.add_argument('--args', type=json.loads, default=None)
    p.add_argument('--kwargs', type=json.loads, default=None)
    p.add_argument('--timeout', type=float, default=0.0)
    p.add_argument('--on-duplicate', default=None)
    p.add_argument('--delay', type=float, default=None)
    p.add_argument('--bind', action='store_true')
    p = sub.add_parser('publish')
    p.add_argument('message')
    p = sub.add_parser('control')
    p.add_argument('command')
    p.add_argument('--data', type=json.loads, default=None)
    p.add_argument('--expected', type=int, default=1)
    p.add_argument('--timeout', type=float, default=5.0)
    p.add_argument('--async', dest='use_async', action='store_true')
    p.add_argument('--no-reply', dest='no_reply', action='store_true')
    p = sub.add_parser('enqueue')
    p.add_argument('task')
    p.add_argument('--args', type=json.loads, default=None)
    p.add_argument('--kwargs', type=json.loads, default=None)
    p.add_argument('--priority', type=int, default=0)
    p.add_argument('--run-in', dest='run_in', type=float, default=0.0)
    p.add_argument('--unique-key', dest='unique_key', default=None)
    p.add_argument('--schema', default='dispatcher')
    p.add_argument('--rollback', action='store_true')
    p = sub.add_parser('write-config')
    p.add_argument('path')
    args = parser.parse_args()

    params = interop_settings.from_env()
    channel = params['channel']
    config = interop_settings.dispatcherd_config(params)

    if args.op == 'write-config':
        with open(args.path, 'w') as f:
            json.dump(config, f, indent=2)
        print(json.dumps({'path': args.path}))
        return

    if args.op == 'enqueue':
        enqueue(args, params)
        return

    from dispatcherd.chunking import split_message
    from dispatcherd.config import setup

    settings = setup(config=config)

    if args.op == 'submit':
        from dispatcherd.processors.delayer import Delayer
        from dispatcherd.publish import submit_task, task

        fn = stub_for(args.task)
        task(queue=channel, decorate=False, on_duplicate=args.on_duplicate)(fn)
        options = (Delayer.Params(delay=args.delay),) if args.delay is not None else ()
        body, queue = submit_task(
            fn,
            args=tuple(args.args) if args.args is not None else None,
            kwargs=args.kwargs,
            timeout=args.timeout,
            processor_options=options,
            bind=args.bind,
        )
        chunks = len(split_message(json.dumps(body), max_bytes=8000))
        print(json.dumps({'message': body, 'queue': queue, 'chunks': chunks}))
    elif args.op == 'publish':
        from dispatcherd.factories import get_publisher_from_settings

        broker = get_publisher_from_settings(settings=settings)
        queue = broker.publish_message(channel=channel, message=args.message)
        chunks = len(split_message(args.message, max_bytes=broker.max_message_bytes))
        print(json.dumps({'queue': queue, 'chunks': chunks}))
    elif args.op == 'control':
        from dispatcherd.control import Control

        ctl = Control('pg_notify', config['brokers']['pg_notify'], queue=channel)
        if args.no_reply:
            ctl.control(args.command, data=args.data)
            print(json.dumps({'sent': True}))
            return
        if args.use_async:
            replies = asyncio.run(
                ctl.acontrol_with_reply(args.command, expected_replies=args.expected, timeout=args.timeout, data=args.data)
            )
        else:
            replies = ctl.control_with_reply(args.command, expected_replies=args.expected, timeout=args.timeout, data=args.data)
        print(json.dumps(replies))


def enqueue(args, params: dict) -> None:
    """The `enqueue` operation (see the module docstring)."""
    import psycopg
    from psycopg import sql
    from dispatcherd.registry import DispatcherMethod

    body = DispatcherMethod(stub_for(args.task)).get_async_body(
        args=tuple(args.args) if args.args is not None else None,
        kwargs=args.kwargs,
    )
    statement = sql.SQL(
        "SELECT {}.enqueue(%s, %s::jsonb, now() + make_interval(secs => %s), %s, %s)"
    ).format(sql.Identifier(args.schema))
    with psycopg.connect(**params['pg']) as conn:
        with conn.cursor() as cur:
            cur.execute(statement, (params['channel'], json.dumps(body), args.run_in, args.priority, args.unique_key))
            row = cur.fetchone()
        if args.rollback:
            conn.rollback()
        else:
            conn.commit()
    print(json.dumps({'message': body, 'id': row[0], 'committed': not args.rollback}))


if __name__ == '__main__':
    main()
