//! The queue commands — `migrate`, `jobs`, `retry`, `discard` — on a connection of their own,
//! through the functions of [`dispatcher_broker_pg::queue`]: no service is involved.

use std::future::Future;
use std::time::Duration;

use dispatcher_broker_pg::queue::{self, KeptJobs, Migrated};
use dispatcher_broker_pg::Error;
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::cli::{exit, Cli, Pick, QueueCommand, DEFAULT_SCHEMA};
use crate::render::queue as show;
use crate::request::{connection, error_chain, secs, Report, CONNECT_GUARD};

/// How long a queue command may work once connected (a frozen server or backend, a migration
/// lock held for good) before it gives up.
const WORK_GUARD: Duration = Duration::from_secs(120);

/// Connects and runs the queue command.
pub(crate) async fn run(cli: &Cli, command: &QueueCommand) -> Report {
    let (config, shown) = match connection(cli) {
        Ok(c) => c,
        Err(report) => return report,
    };
    let mut client = match tokio::time::timeout(CONNECT_GUARD, queue::open_client(&config)).await {
        Ok(Ok(c)) => c,
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
                    "cannot connect to {shown}: no connection within {}",
                    secs(CONNECT_GUARD)
                ),
            )
        }
    };
    let ctx = Context { cli, shown: &shown };
    let work = async {
        match command {
            QueueCommand::Migrate => migrate(&ctx, &mut client).await,
            QueueCommand::Jobs => jobs(&ctx, &client).await,
            QueueCommand::Retry(pick) => settle(&ctx, &client, Settle::Retry, pick).await,
            QueueCommand::Discard(pick) => settle(&ctx, &client, Settle::Discard, pick).await,
        }
    };
    match bounded(work).await {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => ctx.failure(&e),
        Err(after) => Report::failure(
            exit::CONNECT,
            format!(
                "{} via {shown}: the database did not finish within {}",
                cli.command,
                secs(after)
            ),
        ),
    }
}

/// `fut` within [`WORK_GUARD`]; `Err` with the bound when it did not finish.
async fn bounded<T>(fut: impl Future<Output = T>) -> Result<T, Duration> {
    tokio::time::timeout(WORK_GUARD, fut)
        .await
        .map_err(|_| WORK_GUARD)
}

/// What the commands share: the command line and the server as it may be shown.
struct Context<'a> {
    cli: &'a Cli,
    shown: &'a str,
}

impl Context<'_> {
    fn schema(&self) -> &str {
        self.cli.schema()
    }

    /// `dispatcherctl migrate`, with `--schema` when it is not the default.
    fn migrate_hint(&self) -> String {
        if self.schema() == DEFAULT_SCHEMA {
            "`dispatcherctl migrate`".to_owned()
        } else {
            format!("`dispatcherctl migrate --schema {}`", self.schema())
        }
    }

    /// Text for stdout: `value` with `--json`, `human` otherwise.
    fn output(&self, value: Value, human: impl FnOnce() -> String) -> String {
        if self.cli.json {
            format!("{value:#}\n")
        } else {
            human()
        }
    }

    /// The report of a failed command: the exit code by what went wrong, and a message that
    /// says what to do.
    fn failure(&self, e: &Error) -> Report {
        let (command, shown) = (&self.cli.command, self.shown);
        match e {
            Error::NotMigrated {
                schema, found: 0, ..
            } => Report::failure(
                exit::DATABASE,
                format!(
                    "queue schema {schema:?} does not exist in the database at {shown}: run {} \
                     first",
                    self.migrate_hint()
                ),
            ),
            Error::NotMigrated {
                schema,
                found,
                needed,
            } => Report::failure(
                exit::DATABASE,
                format!(
                    "queue schema {schema:?} at {shown} is at version {found}, this \
                     dispatcherctl needs {needed}: run {}",
                    self.migrate_hint()
                ),
            ),
            Error::SchemaTooNew {
                schema,
                found,
                known,
            } => Report::failure(
                exit::DATABASE,
                format!(
                    "queue schema {schema:?} at {shown} is at version {found}, newer than this \
                     dispatcherctl knows ({known}): use a dispatcherctl as new as the services"
                ),
            ),
            Error::Schema { .. } => Report::failure(exit::USAGE, e.to_string()),
            Error::Migration { .. } => Report::failure(
                exit::DATABASE,
                format!("{command} via {shown}: {}", error_chain(e)),
            ),
            // The server answered with an error: it refused the statement.
            Error::Query { source, .. } if source.as_db_error().is_some() => Report::failure(
                exit::DATABASE,
                format!("{command} via {shown}: {}", error_chain(e)),
            ),
            // No answer: the connection broke or timed out.
            _ => Report::failure(
                exit::CONNECT,
                format!("{command} via {shown}: {}", error_chain(e)),
            ),
        }
    }
}

/// `migrate`: applies the missing migrations.
async fn migrate(ctx: &Context<'_>, client: &mut Client) -> Result<Report, Error> {
    let m: Migrated = queue::migrate(client, ctx.schema()).await?;
    let value = json!({
        "schema": m.schema,
        "applied": m.applied,
        "version": m.version,
    });
    Ok(ok(ctx.output(value, || {
        show::migrated(&m.schema, &m.applied, m.version)
    })))
}

/// `jobs`: the counts, then the failed and canceled jobs.
async fn jobs(ctx: &Context<'_>, client: &Client) -> Result<Report, Error> {
    let schema = ctx.schema();
    queue::check_version(client, schema).await?;
    let queue_name = ctx.cli.queue.as_deref();
    let mut stats = queue::stats(client, schema).await?;
    if let Some(name) = queue_name {
        stats.queues.retain(|c| c.queue == name);
    }
    let limit = ctx.cli.limit();
    let failed = if limit == 0 {
        Vec::new()
    } else {
        queue::failed(client, schema, queue_name, i64::from(limit)).await?
    };
    let value = match (serde_json::to_value(&stats), serde_json::to_value(&failed)) {
        (Ok(Value::Object(mut fields)), Ok(listed)) => {
            fields.insert("failed".into(), listed);
            Value::Object(fields)
        }
        (Err(e), _) | (_, Err(e)) => {
            return Ok(Report::failure(
                exit::DATABASE,
                format!("the queue's state could not be written as JSON: {e}"),
            ))
        }
        (Ok(other), Ok(_)) => {
            return Ok(Report::failure(
                exit::DATABASE,
                format!("the queue's counts are not a JSON object: {other}"),
            ))
        }
    };
    Ok(ok(ctx.output(value, || {
        show::jobs(&stats, queue_name, &failed, limit)
    })))
}

/// Which of the two commands on kept jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    Retry,
    Discard,
}

impl Settle {
    /// The past tense, as the output's key: `retried`, `discarded`.
    pub(crate) fn done(self) -> &'static str {
        match self {
            Settle::Retry => "retried",
            Settle::Discard => "discarded",
        }
    }
}

/// `retry` and `discard`: acts on the picked jobs and names the ids it left alone (exit code
/// [`exit::IDS_LEFT`] when there are any).
async fn settle(
    ctx: &Context<'_>,
    client: &Client,
    what: Settle,
    pick: &Pick,
) -> Result<Report, Error> {
    let schema = ctx.schema();
    queue::check_version(client, schema).await?;
    let which = match pick {
        Pick::Ids(ids) => KeptJobs::Ids(ids),
        Pick::AllFailed { queue } => KeptJobs::AllFailed {
            queue: queue.as_deref(),
        },
    };
    let done = match what {
        Settle::Retry => queue::retry_jobs(client, schema, which).await?,
        Settle::Discard => queue::discard_jobs(client, schema, which).await?,
    };
    let left: Vec<i64> = match pick {
        Pick::Ids(ids) => ids
            .iter()
            .copied()
            .filter(|id| done.binary_search(id).is_err())
            .collect(),
        Pick::AllFailed { .. } => Vec::new(),
    };
    let value = json!({
        "schema": schema,
        what.done(): done,
        "count": done.len(),
        "not_failed_or_canceled": left,
    });
    let mut report = ok(ctx.output(value, || show::settled(what.done(), pick, &done)));
    if !left.is_empty() {
        report.code = exit::IDS_LEFT;
        report
            .stderr
            .push(show::left_alone(what.done(), schema, &left));
    }
    Ok(report)
}

fn ok(stdout: String) -> Report {
    Report {
        stdout,
        stderr: Vec::new(),
        code: exit::OK,
    }
}
