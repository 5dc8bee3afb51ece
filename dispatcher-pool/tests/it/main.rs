//! Integration tests with real worker processes. This binary is its own worker program: `main`
//! calls `run_if_worker` first, as an application must.
//!
//! It uses its own `main` (libtest-mimic), so clippy does not see it as test code: unwrap and
//! println are allowed here explicitly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod tasks;
mod tests;

use std::process::ExitCode;

fn main() -> ExitCode {
    let registry = tasks::registry();
    if std::env::var_os("POOL_TEST_FORGETFUL").is_some() {
        return tests::forgetful_main(registry);
    }
    if let Some(code) = dispatcher_pool::run_if_worker(&registry) {
        return code;
    }
    if std::env::var_os("POOL_TEST_SERVE").is_some() {
        return tests::serve_for_orphan_test(registry);
    }
    tests::capture_logs();
    let args = libtest_mimic::Arguments::from_args();
    libtest_mimic::run(&args, tests::all()).exit_code()
}
