//! The broker's and the durable queue's metrics (through the `metrics` facade, like the
//! runtime's): their `# HELP` texts, and registration at zero so that each appears from the first
//! scrape, not only after its first event.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `dispatcher_broker_recycles_total` | counter | | LISTEN connections replaced (failed self-check, lost connection) |
//! | `dispatcher_broker_self_checks_total` | counter | | self-checks that came back in time |
//! | `dispatcher_broker_self_check_failures_total` | counter | | self-checks that did not come back in time |
//! | `dispatcher_broker_publisher_replacements_total` | counter | | publishing connections replaced after a call missed its deadline |
//! | `dispatcher_broker_self_check_rtt_seconds` | gauge | | round trip of the last self-check |
//! | `dispatcher_queue_jobs` | gauge | `queue`, `state` | jobs by state, sampled every 10 s |
//! | `dispatcher_queue_oldest_due_seconds` | gauge | `queue` | how long the oldest due job has waited |
//! | `dispatcher_queue_expired_claims` | gauge | | claims of services whose lease expired |
//! | `dispatcher_queue_claimed_total` | counter | | jobs handed to this service |
//! | `dispatcher_queue_completed_total` | counter | | jobs done and deleted |
//! | `dispatcher_queue_retries_total` | counter | | failed attempts to be retried |
//! | `dispatcher_queue_failures_total` | counter | | jobs failed (attempts exhausted, or rejected) |
//! | `dispatcher_queue_canceled_total` | counter | | jobs canceled |
//! | `dispatcher_queue_released_total` | counter | | jobs given back without counting an attempt |
//! | `dispatcher_queue_rescued_total` | counter | | jobs taken over from services whose lease expired |

use metrics::{describe_counter, describe_gauge, Unit};

/// Every metric this crate records: name and `# HELP` text.
pub const DESCRIPTIONS: [(&str, &str); 15] = [
    ("dispatcher_broker_recycles_total", "LISTEN connections replaced after a failed self-check or a lost connection."),
    ("dispatcher_broker_self_checks_total", "Self-checks of the LISTEN connection that came back in time."),
    ("dispatcher_broker_self_check_failures_total", "Self-checks of the LISTEN connection that failed: the NOTIFY or the notification missed its bound, or the connection died while the check was out."),
    ("dispatcher_broker_publisher_replacements_total", "Publishing connections replaced after a call missed its deadline."),
    ("dispatcher_broker_self_check_rtt_seconds", "Round trip of the last self-check of the LISTEN connection, in seconds."),
    ("dispatcher_queue_jobs", "Durable queue jobs by queue and state, sampled every 10 s."),
    ("dispatcher_queue_oldest_due_seconds", "Seconds the oldest due job of a queue has waited."),
    ("dispatcher_queue_expired_claims", "Claims of services whose lease expired, waiting to be taken over."),
    ("dispatcher_queue_claimed_total", "Durable queue jobs handed to this service."),
    ("dispatcher_queue_completed_total", "Durable queue jobs done and deleted."),
    ("dispatcher_queue_retries_total", "Failed attempts of durable queue jobs to be retried."),
    ("dispatcher_queue_failures_total", "Durable queue jobs failed (attempts exhausted, or rejected)."),
    ("dispatcher_queue_canceled_total", "Durable queue jobs canceled."),
    ("dispatcher_queue_released_total", "Durable queue jobs given back without counting an attempt (at shutdown, or while the service was full)."),
    ("dispatcher_queue_rescued_total", "Durable queue jobs taken over from services whose lease expired."),
];

/// Describes every metric of [`DESCRIPTIONS`] to the installed recorder (the `# HELP` lines) and
/// registers those without labels at zero. Call it after installing a recorder (the server does,
/// and so does [`crate::PgBroker::with_config`]); calling it again is harmless.
pub fn describe() {
    for (name, help) in DESCRIPTIONS {
        if name.ends_with("_total") {
            describe_counter!(name, Unit::Count, help);
            let _ = metrics::counter!(name);
        } else {
            describe_gauge!(name, help);
            if !matches!(
                name,
                "dispatcher_queue_jobs" | "dispatcher_queue_oldest_due_seconds"
            ) {
                let _ = metrics::gauge!(name);
            }
        }
    }
}
