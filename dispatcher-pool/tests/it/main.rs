//! Integration tests with real worker processes. This binary is its own worker program: `main`
//! calls `run_if_worker` first, as an application must. Each test runs a real service with a
//! `ProcessPool` of this very binary; the modules are named for what their tests cover.
//! `conformance` runs the testkit's pool conformance suite on `ProcessPool` directly (its tasks
//! are in `tasks::registry`, so the workers find them).
//!
//! It uses its own `main` (libtest-mimic), so clippy does not see it as test code: unwrap and
//! println are allowed here explicitly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod attempts;
mod cancel;
mod conformance;
mod death;
mod health;
mod limits;
mod output;
mod pipeline;
mod recycling;
mod results;
mod scaling;
mod scheduling;
mod socket_dirs;
mod startup;
mod support;
mod tasks;
mod timeouts;

use std::process::ExitCode;

use libtest_mimic::Trial;

fn main() -> ExitCode {
    let registry = tasks::registry();
    if std::env::var_os("POOL_TEST_FORGETFUL").is_some() {
        return startup::forgetful_main(registry);
    }
    if let Some(code) = dispatcher_pool::run_if_worker(&registry) {
        return code;
    }
    if std::env::var_os("POOL_TEST_SOCKET_SERVE").is_some() {
        return socket_dirs::serve_until_signal(registry);
    }
    if std::env::var_os("POOL_TEST_SERVE").is_some() {
        return death::serve_for_orphan_test(registry);
    }
    output::capture_logs();
    let args = libtest_mimic::Arguments::from_args();
    libtest_mimic::run(&args, all()).exit_code()
}

/// Each `module::test` becomes a trial of that name, run on its own runtime.
macro_rules! trials {
    ($($module:ident :: $name:ident),* $(,)?) => {
        vec![$(Trial::test(
            concat!(stringify!($module), "::", stringify!($name)),
            || support::block_on($module::$name()),
        )),*]
    };
}

fn all() -> Vec<Trial> {
    let mut all = trials![
        results::ok_error_and_panic_keep_the_worker,
        timeouts::timeout_kills_and_replaces_the_worker,
        cancel::cancel_kills_the_worker,
        death::abort_is_worker_lost,
        death::sigkill_from_outside_is_worker_lost,
        recycling::recycle_after_max_tasks,
        scaling::scale_up_and_down,
        results::tasks_from_tasks,
        attempts::attempt_reaches_the_worker_process,
        health::unresponsive_idle_worker_is_replaced,
        death::orphans_exit_when_the_service_is_killed,
        startup::forgotten_entry_call_fails_loudly,
        startup::worker_that_never_connects_fails_start,
        output::worker_output_is_logged_with_the_worker_id,
        limits::memory_limit_ends_a_greedy_worker,
        limits::process_limit_bounds_a_fork_happy_task,
        limits::processes_a_task_started_die_with_its_worker,
        socket_dirs::sigkill_leaves_a_directory_the_next_start_removes,
        socket_dirs::a_live_services_directory_is_kept_and_sigterm_removes_it,
        socket_dirs::sigint_stops_through_the_normal_shutdown,
        socket_dirs::a_failed_start_and_a_dropped_pool_leave_nothing,
        pipeline::a_queued_job_moves_to_a_worker_that_falls_idle,
        pipeline::queued_jobs_run_in_order_once_their_worker_reports_the_job_before,
        pipeline::a_queued_job_survives_the_timeout_of_the_job_before_it,
        pipeline::a_queued_job_survives_its_workers_death,
        pipeline::a_canceled_queued_job_never_runs_and_spares_the_worker,
        pipeline::a_timeout_after_the_worker_moved_on_ends_nothing,
        pipeline::a_cancel_after_the_worker_started_the_queued_job_ends_it,
        pipeline::shutdown_cancels_a_queued_job_that_never_started,
        pipeline::calls_of_one_worker_never_overlap,
        scheduling::workers_run_under_sched_batch_by_default,
        scheduling::normal_scheduling_keeps_the_default_policy,
        pipeline::a_worker_falling_idle_takes_every_job_queued_behind_a_long_one,
    ];
    all.extend(conformance::trials());
    all
}
