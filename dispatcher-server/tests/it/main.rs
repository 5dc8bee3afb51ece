//! The server as operators run it: a separate process started from a config file, stopped with
//! SIGTERM, scraped for metrics. This binary is its own service and worker program: with
//! [`SERVICE_CONFIG_ENV`] set it serves that config file; otherwise it runs the tests, each of
//! which starts it again as a service process. The modules are named for what their tests cover;
//! `support` holds what they share.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod config;
mod log_level;
mod memory;
mod metrics;
mod shutdown;
mod support;

use std::process::ExitCode;
use std::time::Duration;

use dispatcher_core::{task, TaskRegistry};
use dispatcher_server::{init_logging_as, Server, ServerConfig};
use libtest_mimic::Trial;

/// The environment variable that turns this binary into a service process with that config file.
pub const SERVICE_CONFIG_ENV: &str = "SERVER_TEST_CONFIG";

#[task(name = "srv.add")]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Sleeps, then creates the file `path`: proof that it ran to its end.
#[task(name = "srv.sleep_then_touch")]
fn sleep_then_touch(seconds: f64, path: String) -> Result<(), String> {
    std::thread::sleep(Duration::from_secs_f64(seconds));
    std::fs::write(&path, b"done").map_err(|e| format!("{path}: {e}"))
}

fn registry() -> TaskRegistry {
    TaskRegistry::new()
        .register::<add>()
        .register::<sleep_then_touch>()
}

fn main() -> ExitCode {
    let registry = registry();
    if let Some(code) = dispatcher_pool::run_if_worker(&registry) {
        return code;
    }
    if let Ok(path) = std::env::var(SERVICE_CONFIG_ENV) {
        return serve(&path, registry);
    }
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
    trials![
        shutdown::sigterm_lets_the_running_call_finish_and_exits_0,
        shutdown::second_sigterm_stops_at_once,
        shutdown::one_warn_line_per_failed_call,
        memory::freed_memory_goes_back_once_a_burst_is_over,
        metrics::metrics_endpoint_counts_calls,
        log_level::set_log_level_changes_the_filter,
        log_level::debug_is_scoped_and_dependencies_only_by_name,
        log_level::json_lines_parse,
        config::bad_config_file_names_the_key,
        config::bad_log_level_fails_at_start,
        config::wrong_kind_of_value_in_words,
        config::unresolvable_metrics_host_is_named,
        config::connect_timeout_from_the_file_bounds_start_up,
    ]
}

/// What an application's `main` does: config file, environment, logging, run until a signal.
fn serve(path: &str, registry: TaskRegistry) -> ExitCode {
    let mut config = match ServerConfig::from_file(path.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    config.apply_env();
    let log = match init_logging_as(&config.log_level, config.log_format) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let Ok(rt) = dispatcher_server::service_runtime() else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(Server::new(config, registry).log_handle(log).run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
