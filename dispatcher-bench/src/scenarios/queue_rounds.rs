//! The rounds of `queue`: [`super::queue::round`] `--rounds` times, each preceded by the
//! bare-process-pool floor ([`crate::floor::pool`], the same job and worker counts) and, with
//! `--peer`, interleaved with graphile-worker ([`super::peer`]; round 1: this project first,
//! round 2: the peer first, ...). The report's figures are medians over the rounds;
//! `floor_jobs_per_sec` is the floors' median and `ratio_throughput` the median of the rounds'
//! jobs/s over their floor; `peer` holds the peer's medians and `vs_peer` the ratios.

use dispatcher_broker_pg::PgBrokerConfig;
use dispatcher_core::TaskRegistry;
use serde_json::json;

use crate::error::{BenchError, Result};
use crate::floor;
use crate::report::{median, round3, Report, VsPeer};
use crate::scenarios::peer::{self, PeerRun};
use crate::scenarios::queue::round;
use crate::scenarios::Options;

/// Runs the scenario (see the module docs).
pub async fn run(options: Options, _registry: TaskRegistry) -> Result<Report> {
    let url = options.database_url("queue")?.to_owned();
    let pg = PgBrokerConfig::from_url(&url)?.pg;
    let mut peer_skipped = None;
    let with_peer = options.peer
        && match peer::check(&options.peer_script) {
            Ok(()) => true,
            Err(why) => {
                eprintln!("queue: the peer is skipped: {why}");
                peer_skipped = Some(why);
                false
            }
        };
    let rounds = options.rounds.unwrap_or(if with_peer { 3 } else { 1 });
    let mut ours: Vec<Report> = Vec::new();
    let mut theirs: Vec<PeerRun> = Vec::new();
    let mut runs = Vec::new();
    for r in 0..rounds {
        let peer_first = r % 2 == 1;
        let peer_db = format!("dispatcher_bench_peer_{}", std::process::id());
        let run_peer = || {
            peer::run(
                &options.peer_script,
                &pg,
                &peer_db,
                options.peer_jobs,
                options.peer_concurrency,
                options.batch.unwrap_or(1_000),
            )
        };
        if with_peer && peer_first {
            let p = run_peer().await?;
            runs.push(json!({"round": r + 1, "peer": p.line.clone()}));
            theirs.push(p);
        }
        let bare =
            floor::pool::measure(options.tasks, options.workers, options.floor_scheduling).await?;
        let mut report = round(&url, &options, r + 1).await?;
        report.floor_jobs_per_sec = bare.jobs_per_sec;
        report.ratio_throughput = bare
            .jobs_per_sec
            .filter(|f| *f > 0.0)
            .map(|f| round3(report.tasks_per_sec / f));
        report.floor_kind = Some(format!(
            "jobs/s: {}; latency: an INSERT with a NOTIFY, then one SELECT 1 round trip once it arrived",
            bare.kind
        ));
        eprintln!("queue: round {}: {}", r + 1, report.to_json_line()?);
        runs.push(json!({
            "round": r + 1,
            "queue": {
                "jobs_per_sec": report.tasks_per_sec,
                "floor_jobs_per_sec": report.floor_jobs_per_sec,
                "ratio_throughput": report.ratio_throughput,
                "p50_ms": report.p50_ms,
                "p99_ms": report.p99_ms,
                "floor_p50_ms": report.floor_p50_ms,
                "floor_p99_ms": report.floor_p99_ms,
                "publish_seconds": report.publish_seconds,
            }
        }));
        ours.push(report);
        if with_peer && !peer_first {
            let p = run_peer().await?;
            runs.push(json!({"round": r + 1, "peer": p.line.clone()}));
            theirs.push(p);
        }
    }
    let mut report = summarize(ours)?;
    report.peer_skipped = peer_skipped;
    if rounds > 1 {
        report.runs = runs;
    }
    if !theirs.is_empty() {
        let fig = |f: fn(&PeerRun) -> Option<f64>| {
            median(&theirs.iter().filter_map(f).collect::<Vec<_>>())
        };
        let jobs = fig(|p| Some(p.jobs_per_sec));
        let (p50, p99) = (fig(|p| p.p50_ms), fig(|p| p.p99_ms));
        let ratio = |a: Option<f64>, b: Option<f64>| Some(round3(a? / b?));
        report.vs_peer = Some(VsPeer {
            jobs_per_sec: ratio(Some(report.tasks_per_sec), jobs),
            p50: ratio(report.p50_ms, p50),
            p99: ratio(report.p99_ms, p99),
        });
        report.peer = Some(json!({
            "name": "graphile-worker",
            "version": theirs.last().and_then(|p| p.line.get("version").cloned()),
            "jobs": options.peer_jobs,
            "concurrency": options.peer_concurrency,
            "jobs_per_sec": jobs.map(f64::round),
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "runs": theirs.len(),
        }));
    }
    Ok(report)
}

/// Medians over the rounds: the round with the median rate gives the report, with the latency
/// figures replaced by their medians.
fn summarize(mut ours: Vec<Report>) -> Result<Report> {
    let rounds = ours.len() as u64;
    let fig =
        |f: fn(&Report) -> Option<f64>| median(&ours.iter().filter_map(f).collect::<Vec<_>>());
    let (p50, p99, max) = (fig(|r| r.p50_ms), fig(|r| r.p99_ms), fig(|r| r.max_ms));
    let (floor_p50, floor_p99) = (fig(|r| r.floor_p50_ms), fig(|r| r.floor_p99_ms));
    let (floor_rate, ratio) = (fig(|r| r.floor_jobs_per_sec), fig(|r| r.ratio_throughput));
    ours.sort_by(|a, b| a.tasks_per_sec.total_cmp(&b.tasks_per_sec));
    let mid = ours.len() / 2;
    let rates: Vec<f64> = ours.iter().map(|r| r.tasks_per_sec).collect();
    let mut report = ours
        .into_iter()
        .nth(mid)
        .ok_or_else(|| BenchError::Run("no round ran".into()))?;
    if rounds > 1 {
        report.tasks_per_sec = median(&rates).unwrap_or(report.tasks_per_sec).round();
        report.p50_ms = p50.map(round3);
        report.p99_ms = p99.map(round3);
        report.max_ms = max.map(round3);
        report.floor_p50_ms = floor_p50.map(round3);
        report.floor_p99_ms = floor_p99.map(round3);
        report.floor_jobs_per_sec = floor_rate.map(f64::round);
        report.ratio_throughput = ratio.map(round3);
    }
    report.rounds = Some(rounds);
    Ok(report)
}
