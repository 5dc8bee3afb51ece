//! `dispatcherctl`: see the library's documentation (`dispatcherctl --help`) for the command
//! line and the exit codes.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use dispatcherctl::{exit, run, Cli};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Usage errors exit with 2 (clap's convention, and ours); --help and --version with 0.
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dispatcherctl: could not start the async runtime: {e}");
            return ExitCode::from(exit::CONNECT);
        }
    };
    let report = runtime.block_on(run(&cli));
    // Let the broker's background tasks end before the process does.
    drop(runtime);
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth a second error.
    let _ = stdout
        .write_all(report.stdout.as_bytes())
        .and_then(|()| stdout.flush());
    for line in &report.stderr {
        eprintln!("dispatcherctl: {line}");
    }
    ExitCode::from(report.code)
}
