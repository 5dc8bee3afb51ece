//! Compatibility with the Python `dispatcherd` (the real package from PyPI, pinned in
//! `py/requirements.txt`) over a real PostgreSQL server:
//!
//! - `python_publishes`: dispatcherd's publishing API (`submit_task`, the pg_notify broker's
//!   `publish_message` and its chunking) sends tasks that the Rust demo service runs;
//! - `python_control`: dispatcherd's control client (`Control.control_with_reply`, sync and
//!   asyncio, and its `dispatcherctl` command) gets replies it reads from the Rust service;
//! - `rust_to_python`: the Rust `Publisher` runs tasks of a real dispatcherd service, and
//!   `dispatcherctl` and `dispatcher::core::control::request` read its replies;
//! - `shapes`: the replies of both services to the same commands, field by field, and both
//!   services on one channel;
//! - `semantics`: where the two once differed (log level names, the `metrics` reply), now alike;
//! - `durable_queue`: `dispatcher.enqueue(...)` called from Python (psycopg, with dispatcherd's
//!   own message) and from `psql -c` runs the Rust tasks of `dispatcher-demo serve --queue`.
//!
//! The Python side runs in a venv at `<target dir>/dispatcherd-venv`, made on first use by
//! `py/ensure_venv.py` (python3 >= 3.11 and PyPI access needed once; `.ci/run` makes it
//! beforehand; `DISPATCHERD_INTEROP_PYTHON` chooses the interpreter). Without it the tests fail
//! and say what to install; they never skip. `durable_queue` also runs `psql` (the PostgreSQL
//! client; `PSQL` names another). Every test has a fresh database (`PgFixture`) and
//! channels of its own; every process it starts is killed when it ends; every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod durable_queue;
mod python_control;
mod python_publishes;
mod rust_to_python;
mod semantics;
mod shapes;
mod support;
