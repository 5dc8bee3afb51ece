//! `dispatcherctl` as a subprocess against real services on a real PostgreSQL server (see
//! `dispatcher_testkit::postgres` for where the server comes from). Each test works in a fresh
//! database, so its LISTEN/NOTIFY traffic is its own. The modules are named for what their tests
//! cover (`queue`: the queue commands, on the database alone); `support` holds the test tasks,
//! the service and the runs of the binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cancel;
mod commands;
mod environment;
mod exit_codes;
mod log_level;
mod operator;
mod queue;
mod redaction;
mod run_and_history;
mod several_services;
mod signing;
mod support;
mod uuid_prefix;
