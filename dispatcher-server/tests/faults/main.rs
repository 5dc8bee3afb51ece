//! Fault injection with real PostgreSQL and real worker processes.
//!
//! Every test starts this binary as a separate service process (from a TOML config, as operators
//! run it), publishes to it through PostgreSQL, injects one fault, and checks that the service
//! recovers and that every message it accepted is accounted for: `received` equals the number of
//! Calls in the history, no Call is left unfinished, and messages published after the recovery
//! all run ok. Messages lost while no LISTEN connection exists are a property of LISTEN/NOTIFY:
//! the tests count and print them (`lost=`), and assert that they were all sent inside the
//! outage.
//!
//! The durable queue tests (`queue_faults`) promise more, and check it job by job: every job
//! whose enqueue returned Ok runs (exactly once, or at least once when a service is SIGKILLed),
//! accounted for from the jobs table and the services' Call histories.
//!
//! The tests run one at a time by default (`--test-threads` overrides it): they measure recovery
//! times and memory, which parallel load on a small machine would blur. Each prints a `faults:`
//! line with its numbers (`cargo test -p dispatcher-server --test faults -- --nocapture` is not
//! needed: the harness does not capture output).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

/// Trials of async test functions, each on a runtime of its own.
macro_rules! trials {
    ($($name:ident),* $(,)?) => {
        vec![$(libtest_mimic::Trial::test(stringify!($name), || $crate::harness::block_on($name()))),*]
    };
}

mod broker_faults;
mod freeze;
mod harness;
mod load;
mod queue_faults;
mod worker_faults;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use dispatcher_core::{task, TaskContext, TaskRegistry};
use dispatcher_server::{init_logging, Server, ServerConfig};

/// The environment variable that turns this binary into a service process with that config file.
pub const SERVICE_CONFIG_ENV: &str = "FAULTS_SERVICE_CONFIG";

/// The environment variable naming the file where `f.job` records each run it completes.
pub const LEDGER_ENV: &str = "FAULTS_LEDGER";

/// Returns at once.
#[task(name = "f.noop")]
fn noop() {}

/// Takes `micros` microseconds (a sleep).
#[task(name = "f.work")]
fn work(micros: u64) -> u64 {
    std::thread::sleep(Duration::from_micros(micros));
    micros
}

/// Sleeps `seconds`: a Call to disturb while it runs.
#[task(name = "f.sleep")]
fn sleep(seconds: f64) {
    std::thread::sleep(Duration::from_secs_f64(seconds));
}

/// A durable job: takes `micros` microseconds (a sleep), then records that job `id` ran, as the
/// line `<id> <attempt>` appended to the file named by [`LEDGER_ENV`] with one `write` (lines of
/// concurrent workers never mix). The ledger outlives a SIGKILLed service, whose history does
/// not. Retried per its policy: 3 attempts, 0.2 s backoff.
#[task(name = "f.job", context, max_attempts = 3, backoff = 0.2)]
fn job(ctx: &TaskContext, id: u64, micros: u64) -> Result<u64, String> {
    std::thread::sleep(Duration::from_micros(micros));
    if let Ok(path) = std::env::var(LEDGER_ENV) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{path}: {e}"))?;
        file.write_all(format!("{id} {}\n", ctx.attempt()).as_bytes())
            .map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(id)
}

/// Ends the worker with SIGABRT.
#[task(name = "f.abort")]
fn abort() {
    std::process::abort();
}

/// Allocates and touches `mb` megabytes, a megabyte a millisecond, then holds them a while.
#[task(name = "f.eat")]
fn eat(mb: usize) -> usize {
    let mut held: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mb {
        held.push(vec![1u8; 1 << 20]);
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_secs(20));
    held.len()
}

/// Starts up to `n` shells that each start two `sleep 30` of their own, appending each shell's
/// pid to the file `path` as it goes (so the test knows them even when the worker is killed
/// half-way), then waits.
#[task(name = "f.fork_bomb")]
fn fork_bomb(n: usize, path: String) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{path}: {e}"))?;
    let mut children = Vec::new();
    for _ in 0..n {
        let c = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .map_err(|e| e.to_string())?;
        writeln!(file, "{}", c.id()).map_err(|e| e.to_string())?;
        children.push(c);
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_secs(30));
    Ok(())
}

fn registry() -> TaskRegistry {
    TaskRegistry::new()
        .register::<noop>()
        .register::<work>()
        .register::<sleep>()
        .register::<abort>()
        .register::<eat>()
        .register::<fork_bomb>()
        .register::<job>()
}

fn main() -> ExitCode {
    let registry = registry();
    if let Some(code) = dispatcher_pool::run_if_worker(&registry) {
        return code;
    }
    if let Ok(path) = std::env::var(SERVICE_CONFIG_ENV) {
        return serve(&path, registry);
    }
    let mut args = libtest_mimic::Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let mut trials = broker_faults::all();
    trials.extend(freeze::all());
    trials.extend(worker_faults::all());
    trials.extend(load::all());
    trials.extend(queue_faults::all());
    libtest_mimic::run(&args, trials).exit_code()
}

/// What an application's `main` does: config file, logging, run until a signal.
fn serve(path: &str, registry: TaskRegistry) -> ExitCode {
    let config = match ServerConfig::from_file(path.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
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
