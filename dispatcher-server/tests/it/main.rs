//! The server as operators run it: a separate process started from a config file, stopped with
//! SIGTERM, scraped for metrics. This binary is its own service and worker program.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod tests;

use std::process::ExitCode;
use std::time::Duration;

use dispatcher_core::{task, TaskRegistry};
use dispatcher_server::{init_logging, Server, ServerConfig};

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
    if let Ok(path) = std::env::var("SERVER_TEST_CONFIG") {
        return serve(&path, registry);
    }
    let args = libtest_mimic::Arguments::from_args();
    libtest_mimic::run(&args, tests::all()).exit_code()
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
    let log = match init_logging(&config.log_level) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let Ok(rt) = tokio::runtime::Runtime::new() else {
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
