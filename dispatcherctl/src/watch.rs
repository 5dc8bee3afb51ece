//! `--watch SECS`: the command again every SECS seconds until Ctrl-C (SIGINT) or SIGTERM.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

use crate::cli::{exit, Cli};
use crate::request::{run, Report};

/// Runs `cli` every `every` (measured from the start of one run to the start of the next; a
/// run that takes longer is followed at once by the next) and hands each [`Report`] to `emit`,
/// until SIGINT or SIGTERM, which end the wait or the run under way: the exit code is then
/// [`exit::OK`]. A usage error ends it at once with its own code (it would not change).
pub async fn watch(cli: &Cli, every: Duration, mut emit: impl FnMut(&Report)) -> u8 {
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            emit(&Report::failure(
                exit::USAGE,
                format!("--watch could not set up its Ctrl-C handler: {e}"),
            ));
            return exit::USAGE;
        }
    };
    loop {
        let started = Instant::now();
        let report = tokio::select! {
            r = run(cli) => r,
            _ = interrupt.recv() => return exit::OK,
            _ = terminate.recv() => return exit::OK,
        };
        emit(&report);
        if report.code == exit::USAGE {
            return report.code;
        }
        tokio::select! {
            () = tokio::time::sleep_until(started + every) => {}
            _ = interrupt.recv() => return exit::OK,
            _ = terminate.recv() => return exit::OK,
        }
    }
}
