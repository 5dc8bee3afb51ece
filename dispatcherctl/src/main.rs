//! `dispatcherctl`: see the library's documentation (`dispatcherctl --help`) for the command
//! line and the exit codes.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dispatcherctl::{exit, run, watch, Cli, Report};
use tracing_subscriber::EnvFilter;

/// How long the end of the process waits for the runtime's leftover tasks.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(200);

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
    let code = match cli.watch {
        None => {
            let report = runtime.block_on(run(&cli));
            print("", &report, "");
            report.code
        }
        Some(every) => {
            let redraw = std::io::stdout().is_terminal();
            let title = format!(
                "Every {}s: dispatcherctl {}",
                every.as_secs_f64(),
                cli.command
            );
            runtime.block_on(watch(&cli, every, |report| {
                // On a terminal: home and clear, then the title, so the screen shows the latest
                // run only; otherwise each run is appended, a blank line after it.
                let (before, after) = if redraw {
                    (format!("\x1b[H\x1b[2J{title}\n\n"), "")
                } else {
                    (String::new(), "\n")
                };
                print(&before, report, after);
            }))
        }
    };
    // A connection that never answered may leave a task behind: do not wait for it long.
    runtime.shutdown_timeout(SHUTDOWN_WAIT);
    ExitCode::from(code)
}

/// Writes a report: its text on stdout (between `before` and `after`), its messages on stderr.
fn print(before: &str, report: &Report, after: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth a second error.
    let _ = stdout
        .write_all(before.as_bytes())
        .and_then(|()| stdout.write_all(report.stdout.as_bytes()))
        .and_then(|()| stdout.write_all(after.as_bytes()))
        .and_then(|()| stdout.flush());
    for line in &report.stderr {
        eprintln!("dispatcherctl: {line}");
    }
}
