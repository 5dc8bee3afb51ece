//! What `dispatcherctl` prints about itself: shell completions and the man page, generated from
//! the command line ([`Cli`]) with `clap_complete` and `clap_mangen`.

use clap::CommandFactory;

use crate::cli::{exit, Cli};
use crate::request::Report;

/// The completion script for `shell`.
pub(crate) fn completions(shell: clap_complete::Shell) -> Report {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "dispatcherctl", &mut out);
    text(out, "completions")
}

/// The man page (roff).
pub(crate) fn man() -> Report {
    let mut out = Vec::new();
    match clap_mangen::Man::new(Cli::command()).render(&mut out) {
        Ok(()) => text(out, "the man page"),
        Err(e) => Report::failure(exit::USAGE, format!("could not render the man page: {e}")),
    }
}

fn text(bytes: Vec<u8>, what: &str) -> Report {
    match String::from_utf8(bytes) {
        Ok(stdout) => Report {
            stdout,
            stderr: Vec::new(),
            code: exit::OK,
        },
        Err(e) => Report::failure(exit::USAGE, format!("{what} are not UTF-8: {e}")),
    }
}
