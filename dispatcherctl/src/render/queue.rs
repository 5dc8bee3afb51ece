//! The readable output of the queue commands (`--json` prints their values as they are).

use dispatcher_broker_pg::queue::{FailedJob, QueueCounts, QueueStats};
use serde_json::Value;

use super::text::{count, render_table};
use crate::cli::Pick;

/// Most ids named in one line; the rest are counted.
const IDS_SHOWN: usize = 20;

/// `migrate`: what was applied and the version now.
pub(crate) fn migrated(schema: &str, applied: &[i32], version: i32) -> String {
    match applied {
        [] => {
            format!("queue schema {schema:?} is up to date at version {version}; nothing applied\n")
        }
        [one] => {
            format!("queue schema {schema:?}: applied migration {one}; now at version {version}\n")
        }
        many => format!(
            "queue schema {schema:?}: applied migrations {}; now at version {version}\n",
            id_list(many)
        ),
    }
}

/// `jobs`: a line on the services, the counts by queue, then the failed and canceled jobs
/// (`failed`, at most `limit` of them; none listed when `limit` is 0).
pub(crate) fn jobs(
    stats: &QueueStats,
    queue: Option<&str>,
    failed: &[FailedJob],
    limit: u32,
) -> String {
    let mut out = format!(
        "queue schema {:?}: {}, {}\n",
        stats.schema,
        count(non_negative(stats.live_owners), "live service"),
        count(non_negative(stats.expired_claims), "expired claim")
    );
    if stats.queues.is_empty() {
        match queue {
            Some(q) => out.push_str(&format!("queue {q:?}: no jobs\n")),
            None => out.push_str("no jobs\n"),
        }
    } else {
        out.push_str(&counts_table(&stats.queues));
    }
    if limit == 0 {
        return out;
    }
    let kept: i64 = stats.queues.iter().map(|c| c.failed + c.canceled).sum();
    let total = non_negative(kept).max(failed.len() as u64);
    if failed.is_empty() {
        out.push_str("\nno failed or canceled jobs\n");
        return out;
    }
    if (failed.len() as u64) < total {
        out.push_str(&format!(
            "\n{} of {total} failed or canceled jobs, newest first (--limit {limit}):\n",
            failed.len()
        ));
    } else {
        out.push_str(&format!(
            "\n{}, newest first:\n",
            count(total, "failed or canceled job")
        ));
    }
    let rows: Vec<Vec<String>> = failed.iter().map(failed_row).collect();
    out.push_str(&render_table(
        &[
            "id",
            "queue",
            "task",
            "state",
            "attempts",
            "when (UTC)",
            "last error",
        ],
        &rows,
    ));
    out
}

/// The counts, one row per queue.
fn counts_table(queues: &[QueueCounts]) -> String {
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|c| {
            vec![
                c.queue.clone(),
                c.available.to_string(),
                c.due.to_string(),
                c.running.to_string(),
                c.failed.to_string(),
                c.canceled.to_string(),
                if c.due > 0 {
                    age(c.oldest_due_s)
                } else {
                    "-".to_owned()
                },
            ]
        })
        .collect();
    render_table(
        &[
            "queue",
            "available",
            "due",
            "running",
            "failed",
            "canceled",
            "oldest due",
        ],
        &rows,
    )
}

/// One failed or canceled job: its last attempt's error, when it failed in UTC.
fn failed_row(f: &FailedJob) -> Vec<String> {
    vec![
        f.id.to_string(),
        f.queue.clone(),
        f.task.clone(),
        f.state.clone(),
        f.attempt.to_string(),
        utc(f.failed_at),
        last_error(&f.errors).unwrap_or_else(|| "-".to_owned()),
    ]
}

/// The `error` of the last entry of a job's `errors` (`[{"attempt", "at", "error"}, ...]`).
pub(crate) fn last_error(errors: &Value) -> Option<String> {
    let last = errors.as_array()?.last()?;
    match last.get("error")? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// `retry` and `discard`: how many were acted on, and which (`done` is `retried` or
/// `discarded`).
pub(crate) fn settled(done: &str, pick: &Pick, ids: &[i64]) -> String {
    let n = ids.len() as u64;
    let scope = match pick {
        Pick::AllFailed { queue: Some(q) } => format!(" of queue {q:?}"),
        _ => String::new(),
    };
    match (pick, ids) {
        (Pick::Ids(_), []) => format!("{done} no jobs\n"),
        (Pick::Ids(_), _) => format!("{done} {}: {}\n", count(n, "job"), id_list(ids)),
        (Pick::AllFailed { .. }, []) => format!("{done} no jobs: no failed jobs{scope}\n"),
        (Pick::AllFailed { .. }, _) => format!(
            "{done} {}{scope}: {}\n",
            count(n, "failed job"),
            id_list(ids)
        ),
    }
}

/// The message naming the ids `retry` or `discard` left alone.
pub(crate) fn left_alone(done: &str, schema: &str, left: &[i64]) -> String {
    let (subject, what) = if left.len() == 1 {
        ("id", "is not a failed or canceled job")
    } else {
        ("ids", "are not failed or canceled jobs")
    };
    format!(
        "not {done}: {subject} {} {what} in queue schema {schema:?} (no such job, or it is \
         waiting or running); `dispatcherctl jobs` lists the failed and canceled ones",
        id_list(left)
    )
}

/// `1, 2, 3`, at most [`IDS_SHOWN`] of them, then how many more.
fn id_list<T: ToString>(ids: &[T]) -> String {
    let mut out = ids
        .iter()
        .take(IDS_SHOWN)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > IDS_SHOWN {
        out.push_str(&format!(" and {} more", ids.len() - IDS_SHOWN));
    }
    out
}

fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// An age for people: `4.2s`, `3m 05s`, `2h 07m`, `3d 04h`.
pub(crate) fn age(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".to_owned();
    }
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let s = secs as u64;
    match s {
        0..3_600 => format!("{}m {:02}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h {:02}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` in UTC (`-` when not a time).
pub(crate) fn utc(epoch_secs: f64) -> String {
    if !epoch_secs.is_finite() {
        return "-".to_owned();
    }
    let secs = epoch_secs.floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn migrate_says_what_it_applied() {
        assert_eq!(
            migrated("dispatcher", &[1], 1),
            "queue schema \"dispatcher\": applied migration 1; now at version 1\n"
        );
        assert_eq!(
            migrated("q", &[2, 3], 3),
            "queue schema \"q\": applied migrations 2, 3; now at version 3\n"
        );
        assert_eq!(
            migrated("q", &[], 3),
            "queue schema \"q\" is up to date at version 3; nothing applied\n"
        );
    }

    fn counts(queue: &str, available: i64, due: i64, failed: i64, oldest: f64) -> QueueCounts {
        let mut c = QueueCounts::default();
        c.queue = queue.into();
        c.available = available;
        c.due = due;
        c.failed = failed;
        c.oldest_due_s = oldest;
        c
    }

    #[test]
    fn counts_table_per_queue() {
        let mut stats = QueueStats::default();
        stats.schema = "dispatcher".into();
        stats.live_owners = 1;
        stats.queues = vec![
            counts("default", 5, 4, 0, 75.0),
            counts("later", 2, 0, 1, 0.0),
        ];
        let out = jobs(&stats, None, &[], 20);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "queue schema \"dispatcher\": 1 live service, 0 expired claims"
        );
        assert_eq!(
            lines[1],
            "queue    available  due  running  failed  canceled  oldest due"
        );
        assert_eq!(
            lines[3],
            "default          5    4        0       0         0  1m 15s"
        );
        assert_eq!(
            lines[4],
            "later            2    0        0       1         0  -"
        );
        assert_eq!(lines[6], "no failed or canceled jobs");
        // --limit 0: counts only.
        assert!(!jobs(&stats, None, &[], 0).contains("failed or canceled"));
        stats.queues.clear();
        assert!(jobs(&stats, Some("x"), &[], 20).contains("queue \"x\": no jobs\n"));
        assert!(jobs(&stats, None, &[], 20).contains("\nno jobs\n"));
    }

    #[test]
    fn the_last_attempt_error_is_shown() {
        let errors = json!([
            {"attempt": 1, "at": "t", "error": "first"},
            {"attempt": 2, "at": "t", "error": "second"},
        ]);
        assert_eq!(last_error(&errors).as_deref(), Some("second"));
        assert_eq!(last_error(&json!([])), None);
        assert_eq!(last_error(&Value::Null), None);
        assert_eq!(
            last_error(&json!([{"error": {"code": 1}}])).as_deref(),
            Some("{\"code\":1}")
        );
    }

    #[test]
    fn settled_and_left_alone() {
        let ids = Pick::Ids(vec![3, 5, 7]);
        assert_eq!(settled("retried", &ids, &[3, 5]), "retried 2 jobs: 3, 5\n");
        assert_eq!(settled("discarded", &ids, &[]), "discarded no jobs\n");
        let all = Pick::AllFailed {
            queue: Some("q".into()),
        };
        assert_eq!(
            settled("retried", &all, &[1]),
            "retried 1 failed job of queue \"q\": 1\n"
        );
        assert_eq!(
            settled("discarded", &all, &[]),
            "discarded no jobs: no failed jobs of queue \"q\"\n"
        );
        let many: Vec<i64> = (1..=25).collect();
        assert!(settled("retried", &Pick::AllFailed { queue: None }, &many)
            .ends_with("19, 20 and 5 more\n"));
        let e = left_alone("retried", "dispatcher", &[7]);
        assert!(
            e.starts_with("not retried: id 7 is not a failed or canceled job in queue schema"),
            "{e}"
        );
        let e = left_alone("discarded", "dispatcher", &[7, 9]);
        assert!(e.starts_with("not discarded: ids 7, 9 are not"), "{e}");
    }

    #[test]
    fn ages_and_times() {
        assert_eq!(age(4.24), "4.2s");
        assert_eq!(age(185.0), "3m 05s");
        assert_eq!(age(2.0 * 3600.0 + 7.0 * 60.0), "2h 07m");
        assert_eq!(age(3.0 * 86_400.0 + 4.0 * 3600.0), "3d 04h");
        assert_eq!(age(f64::NAN), "-");
        assert_eq!(utc(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000.9), "2023-11-14 22:13:20");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00");
        assert_eq!(utc(-1.0), "1969-12-31 23:59:59");
        assert_eq!(utc(f64::INFINITY), "-");
    }
}
