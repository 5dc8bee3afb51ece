//! The exchange with the services: connect, send the command through
//! [`dispatcher_core::control::request_with`], collect the replies and decide the exit code,
//! all within `--timeout`. Queue commands go to [`crate::queue`] instead; `completions` and
//! `man` to [`crate::local`].

use std::time::Duration;

use dispatcher_core::control::{Reply, RequestOptions};
use tokio::time::Instant;

use dispatcher_broker_pg::{redact_connection_string, PgBroker, PgBrokerConfig};
use serde_json::Value;

use crate::cli::{action, exit, signing_key, Action, Cli};
use crate::render::{format_human, format_json};

/// How long connecting may take at most for the queue commands, whatever the connection string
/// says.
pub(crate) const CONNECT_GUARD: Duration = Duration::from_secs(30);

/// What a run produced: text for stdout, lines for stderr and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Everything for stdout (empty when nothing is to be printed there).
    pub stdout: String,
    /// Diagnostics, one message per entry, for stderr.
    pub stderr: Vec<String>,
    /// The exit code (see [`exit`]).
    pub code: u8,
}

impl Report {
    pub(crate) fn failure(code: u8, message: String) -> Report {
        Report {
            stdout: String::new(),
            stderr: vec![message],
            code,
        }
    }
}

/// Runs the command line: a control command is sent to the services (their replies collected
/// and rendered); a queue command ([`QueueCommand`](crate::QueueCommand)) acts on the database.
pub async fn run(cli: &Cli) -> Report {
    let action = match action(cli) {
        Ok(a) => a,
        Err(e) => return Report::failure(exit::USAGE, e),
    };
    match action {
        Action::Queue(command) => return crate::queue::run(cli, &command).await,
        Action::Completions(shell) => return crate::local::completions(shell),
        Action::Man => return crate::local::man(),
        Action::Control => {}
    }
    // Everything below, connecting included, happens within --timeout.
    let deadline = Instant::now() + cli.timeout;
    let signing = match signing_key(cli) {
        Ok(k) => k,
        Err(e) => return Report::failure(exit::USAGE, e),
    };
    let (config, shown) = match connection(cli) {
        Ok(c) => c,
        Err(report) => return report,
    };
    let broker = match tokio::time::timeout_at(deadline, PgBroker::with_config(config)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return Report::failure(
                exit::CONNECT,
                format!("cannot connect to {shown}: {}", error_chain(&e)),
            )
        }
        Err(_) => {
            return Report::failure(
                exit::CONNECT,
                format!(
                    "timed out connecting to {shown}: no connection within --timeout {} \
                     (is the server up and answering on that port?)",
                    secs(cli.timeout)
                ),
            )
        }
    };
    let data = cli.data.clone().unwrap_or_default();
    let options = RequestOptions::new(deadline.saturating_duration_since(Instant::now()))
        .expected(cli.expected_replies.map(|n| n as usize))
        .quiet(cli.quiet())
        .signing(signing);
    // request_with counts its wait from the send; LISTEN and the send itself are bounded here
    // (with a little room for the replies collected up to the deadline to come back).
    let exchange =
        dispatcher_core::control::request_with(&broker, &cli.channel, &cli.command, data, &options);
    let replies = match tokio::time::timeout_at(deadline + EXCHANGE_GRACE, exchange).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return Report::failure(
                exit::CONNECT,
                format!(
                    "could not send {:?} on channel {:?} via {shown}: {}",
                    cli.command,
                    cli.channel,
                    error_chain(&e)
                ),
            )
        }
        Err(_) => {
            return Report::failure(
                exit::CONNECT,
                format!(
                    "timed out listening for replies and sending {:?} on channel {:?} via \
                     {shown}: not done within --timeout {}",
                    cli.command,
                    cli.channel,
                    secs(cli.timeout)
                ),
            )
        }
    };
    drop(broker);
    finish(cli, replies)
}

/// Room past the deadline for the replies collected up to it to come back from
/// [`request_with`](dispatcher_core::control::request_with), which counts its wait from the
/// send.
const EXCHANGE_GRACE: Duration = Duration::from_millis(500);

/// The connection settings of `--database-url` and the string as it may be shown (password
/// redacted); an unparseable string is a usage error.
pub(crate) fn connection(cli: &Cli) -> Result<(PgBrokerConfig, String), Report> {
    let url = cli
        .database_url()
        .map_err(|e| Report::failure(exit::USAGE, e))?;
    let shown = redact_connection_string(url);
    match PgBrokerConfig::from_url(url) {
        Ok(c) => Ok((c, shown)),
        Err(e) => {
            // The broker's own message repeats the string: show the parser's reason alone.
            let reason = match &e {
                dispatcher_broker_pg::Error::Config { source, .. } => error_chain(source),
                dispatcher_broker_pg::Error::Settings { reason, .. } => reason.clone(),
                other => error_chain(other),
            };
            Err(Report::failure(
                exit::USAGE,
                format!(
                    "invalid connection string (--database-url or DATABASE_URL) {shown}: {reason}"
                ),
            ))
        }
    }
}

/// Renders the replies that arrived and decides the exit code (the part of [`run`] after the
/// replies are in).
pub fn finish(cli: &Cli, replies: Vec<Value>) -> Report {
    let stdout = if cli.json {
        format_json(&replies)
    } else {
        format_human(&cli.command, &replies)
    };
    let mut report = Report {
        stdout,
        stderr: Vec::new(),
        code: exit::OK,
    };
    match cli.expected_replies {
        Some(n) if replies.len() < n as usize => {
            report.code = exit::MISSING_REPLIES;
            report.stderr.push(format!(
                "only {} of {} expected replies arrived on channel {:?} within {}",
                replies.len(),
                n,
                cli.channel,
                secs(cli.timeout)
            ));
        }
        None if replies.is_empty() => {
            report.code = exit::MISSING_REPLIES;
            report.stderr.push(format!(
                "no service replied on channel {:?} within {}",
                cli.channel,
                secs(cli.timeout)
            ));
        }
        _ => {}
    }
    let errors: Vec<String> = replies
        .iter()
        .filter_map(|r| {
            let reply = Reply::from_value(r.clone());
            let error = reply.body.get("error")?;
            let text = error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned);
            let node = if reply.node_id.is_empty() {
                "(no node_id)".to_owned()
            } else {
                reply.node_id
            };
            Some(format!(
                "node {node} answered {:?} with an error: {text}",
                cli.command
            ))
        })
        .collect();
    if !errors.is_empty() {
        report.code = exit::ERROR_REPLY;
        report.stderr.extend(errors);
    }
    report
}

pub use dispatcher_core::error_chain;

pub(crate) fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::cli;
    use serde_json::json;

    #[test]
    fn exit_codes_for_missing_replies() {
        let c = cli(&["alive", "--expected-replies", "3"]).unwrap();
        let r = finish(&c, vec![json!({"node_id": "a"}), json!({"node_id": "b"})]);
        assert_eq!(r.code, exit::MISSING_REPLIES);
        assert!(r.stderr[0].contains("only 2 of 3"), "{:?}", r.stderr);
        assert!(r.stdout.contains("node a: alive"));
        let c = cli(&["alive", "--timeout", "1"]).unwrap();
        let r = finish(&c, vec![]);
        assert_eq!(r.code, exit::MISSING_REPLIES);
        assert_eq!(
            r.stderr,
            vec!["no service replied on channel \"dispatcher\" within 1s"]
        );
        let r = finish(&c, vec![json!({"node_id": "a"})]);
        assert_eq!(r.code, exit::OK);
        assert!(r.stderr.is_empty());
    }

    #[test]
    fn error_replies_have_their_own_exit_code() {
        let c = cli(&["nope"]).unwrap();
        let r = finish(
            &c,
            vec![
                json!({"node_id": "a"}),
                json!({"node_id": "b", "error": "No control method nope"}),
            ],
        );
        assert_eq!(r.code, exit::ERROR_REPLY);
        assert_eq!(
            r.stderr,
            vec!["node b answered \"nope\" with an error: No control method nope"]
        );
        assert!(
            r.stdout.contains("node b: error: No control method nope"),
            "{}",
            r.stdout
        );
        // Also with --json: the replies are printed as sent.
        let c = cli(&["--json", "nope"]).unwrap();
        let r = finish(&c, vec![json!({"node_id": "b", "error": {"code": 1}})]);
        assert_eq!(r.code, exit::ERROR_REPLY);
        assert!(r.stdout.contains("\"code\": 1"), "{}", r.stdout);
    }

    #[test]
    fn error_chains_skip_what_is_already_said() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "could not connect: refused",
            Some(Box::new(E(
                "refused",
                Some(Box::new(E("os error 111", None))),
            ))),
        );
        assert_eq!(error_chain(&e), "could not connect: refused: os error 111");
    }
}
