//! Same-run floors: the physical limits a scenario's figure is compared with.
//!
//! Throughput and latency on a small shared machine drift by up to 2x between runs and days, so
//! a figure means something only next to the floor measured in the same run. Each scenario runs
//! `--rounds R` times, each round preceded by its floor (floor, scenario, floor, scenario, ...),
//! and [`combine`] reports the medians and the per-round ratios:
//!
//! | scenario | floor |
//! |---|---|
//! | `pool` | [`pool`]: a bare process pool, the IPC round trip alone, same job count |
//! | `pg` | [`raw`]: raw `SELECT pg_notify(...)` from the same number of clients |
//! | `pg --batch N` | [`pool`]: the bare process pool (the batched ceiling) |
//! | `latency` | [`notify`]: raw LISTEN/NOTIFY publish-to-arrival, paced the same way |
//! | `control` | 2 x [`notify`] (a command and its reply are two NOTIFY legs) |
//! | `queue` | [`pool`] for jobs/s; [`enqueue`] (an INSERT with a NOTIFY) for latency |

pub mod enqueue;
pub mod notify;
pub mod pool;
pub mod raw;

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{BenchError, Result};
use crate::report::{median, round3, Report};

/// One measurement of a floor.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Floor {
    /// What was measured, e.g. `bare process pool, 4 workers`.
    pub kind: String,
    /// Jobs (or transactions) per second, for a throughput floor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs_per_sec: Option<f64>,
    /// Median latency, milliseconds, for a latency floor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// CPU time of this process per job, microseconds (the bare pool's parent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_main_us_per_job: Option<f64>,
    /// CPU time of the workers per job, microseconds (the bare pool's workers together).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_workers_us_per_job: Option<f64>,
}

/// How a scenario's figures are set against its floor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Compare {
    /// `ratio_throughput = tasks_per_sec / floor jobs_per_sec` (higher is better, 1 is the
    /// floor).
    Throughput,
    /// The scenario's latency crosses the floor `legs` times: the floor is `legs x` the
    /// measured p50/p99; `over_floor_*_ms = scenario - floor`, `ratio_p50`/`ratio_p99 =
    /// scenario / floor`.
    Latency {
        /// NOTIFY legs of one scenario sample (1 for `latency`, 2 for `control`).
        legs: f64,
    },
}

/// One round: the floor measured just before the scenario, and the scenario's report.
#[derive(Debug, Clone)]
pub struct Round {
    /// The floor, when one was measured.
    pub floor: Option<Floor>,
    /// The scenario's figures.
    pub report: Report,
}

/// The per-round comparison of a scenario with its floor.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ratios {
    /// Scenario throughput / floor throughput.
    pub throughput: Option<f64>,
    /// The floor's p50 times the legs, milliseconds.
    pub floor_p50: Option<f64>,
    /// The floor's p99 times the legs, milliseconds.
    pub floor_p99: Option<f64>,
    /// Scenario p50 - floor p50, milliseconds.
    pub over_p50: Option<f64>,
    /// Scenario p99 - floor p99, milliseconds.
    pub over_p99: Option<f64>,
    /// Scenario p50 / floor p50.
    pub ratio_p50: Option<f64>,
    /// Scenario p99 / floor p99.
    pub ratio_p99: Option<f64>,
}

/// How `report` compares with `floor`.
pub fn ratios(compare: Compare, report: &Report, floor: &Floor) -> Ratios {
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    match compare {
        Compare::Throughput => Ratios {
            throughput: div(Some(report.tasks_per_sec), floor.jobs_per_sec),
            ..Ratios::default()
        },
        Compare::Latency { legs } => {
            let floor_p50 = floor.p50_ms.map(|v| v * legs);
            let floor_p99 = floor.p99_ms.map(|v| v * legs);
            let sub = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
            Ratios {
                throughput: None,
                floor_p50,
                floor_p99,
                over_p50: sub(report.p50_ms, floor_p50),
                over_p99: sub(report.p99_ms, floor_p99),
                ratio_p50: div(report.p50_ms, floor_p50),
                ratio_p99: div(report.p99_ms, floor_p99),
            }
        }
    }
}

/// The medians of `rounds`: the round with the median headline figure (`tasks_per_sec` for
/// [`Compare::Throughput`], `p50_ms` for latency) gives the report; its throughput and latency
/// figures are replaced by their medians over the rounds; `floor_*` are the floors' medians,
/// `ratio_*`/`over_floor_*` the medians of the per-round comparisons (each round with the floor
/// measured just before it); `runs` holds every round's figures.
pub fn combine(compare: Compare, rounds: Vec<Round>) -> Result<Report> {
    let n = rounds.len();
    let compared: Vec<Option<Ratios>> = rounds
        .iter()
        .map(|r| r.floor.as_ref().map(|f| ratios(compare, &r.report, f)))
        .collect();
    let runs: Vec<Value> = rounds
        .iter()
        .zip(&compared)
        .enumerate()
        .map(|(i, (r, c))| run_json(i + 1, r, c.as_ref()))
        .collect();
    let med = |v: Vec<Option<f64>>| median(&v.into_iter().flatten().collect::<Vec<_>>());
    let rep = |f: fn(&Report) -> Option<f64>| med(rounds.iter().map(|r| f(&r.report)).collect());
    let flo = |f: fn(&Floor) -> Option<f64>| {
        med(rounds
            .iter()
            .map(|r| r.floor.as_ref().and_then(f))
            .collect())
    };
    let cmp = |f: fn(&Ratios) -> Option<f64>| {
        med(compared.iter().map(|c| c.and_then(|c| f(&c))).collect())
    };
    let rate = rep(|r| Some(r.tasks_per_sec));
    let (p50, p99, max) = (rep(|r| r.p50_ms), rep(|r| r.p99_ms), rep(|r| r.max_ms));
    let (p50_total, p99_total) = (rep(|r| r.p50_total_ms), rep(|r| r.p99_total_ms));
    let seconds = rep(|r| Some(r.seconds));
    let floor_rate = flo(|f| f.jobs_per_sec);
    let floor_cpu = (
        flo(|f| f.cpu_main_us_per_job),
        flo(|f| f.cpu_workers_us_per_job),
    );
    let floor_kind = rounds
        .iter()
        .find_map(|r| Some(r.floor.as_ref()?.kind.clone()));
    let legs = match compare {
        Compare::Latency { legs } => legs,
        Compare::Throughput => 1.0,
    };
    let (arrival_p50, arrival_p99) = (flo(|f| f.p50_ms), flo(|f| f.p99_ms));
    let headline = |r: &Report| match compare {
        Compare::Throughput => r.tasks_per_sec,
        Compare::Latency { .. } => r.p50_ms.unwrap_or(f64::NAN),
    };
    let mut sorted = rounds;
    sorted.sort_by(|a, b| headline(&a.report).total_cmp(&headline(&b.report)));
    let mut report = sorted
        .into_iter()
        .nth(n / 2)
        .map(|r| r.report)
        .ok_or_else(|| BenchError::Run("no round ran".into()))?;
    if n > 1 {
        report.tasks_per_sec = rate.unwrap_or(report.tasks_per_sec).round();
        report.seconds = seconds.map_or(report.seconds, round3);
        report.p50_ms = p50.map(round3);
        report.p99_ms = p99.map(round3);
        report.max_ms = max.map(round3);
        report.p50_total_ms = p50_total.map(round3);
        report.p99_total_ms = p99_total.map(round3);
        report.runs = runs;
    }
    report.rounds = Some(n as u64);
    report.floor_kind = floor_kind;
    report.floor_jobs_per_sec = floor_rate.map(f64::round);
    report.floor_cpu_main_us_per_task = floor_cpu.0.map(round3);
    report.floor_cpu_workers_us_per_task = floor_cpu.1.map(round3);
    if matches!(compare, Compare::Latency { .. }) {
        report.floor_p50_ms = arrival_p50.map(|v| round3(v * legs));
        report.floor_p99_ms = arrival_p99.map(|v| round3(v * legs));
        if legs != 1.0 {
            report.floor_arrival_p50_ms = arrival_p50.map(round3);
            report.floor_arrival_p99_ms = arrival_p99.map(round3);
        }
    }
    report.ratio_throughput = cmp(|c| c.throughput).map(round3);
    report.over_floor_p50_ms = cmp(|c| c.over_p50).map(round3);
    report.over_floor_p99_ms = cmp(|c| c.over_p99).map(round3);
    report.ratio_p50 = cmp(|c| c.ratio_p50).map(round3);
    report.ratio_p99 = cmp(|c| c.ratio_p99).map(round3);
    Ok(report)
}

/// One round's figures for `runs` (the floor's `kind` is the report's `floor_kind`).
fn run_json(number: usize, round: &Round, ratios: Option<&Ratios>) -> Value {
    let r = &round.report;
    let mut v = json!({"round": number, "tasks_per_sec": r.tasks_per_sec});
    let mut put = |key: &str, x: Option<f64>| {
        if let Some(x) = x {
            v[key] = json!(round3(x));
        }
    };
    put("p50_ms", r.p50_ms);
    put("p99_ms", r.p99_ms);
    put("cpu_main_us_per_task", r.cpu_main_us_per_task);
    put("cpu_workers_us_per_task", r.cpu_workers_us_per_task);
    put("rss_main_kb", r.rss_main_kb.map(|k| k as f64));
    put(
        "rss_main_settled_kb",
        r.rss_main_settled_kb.map(|k| k as f64),
    );
    if let Some(f) = &round.floor {
        put("floor_jobs_per_sec", f.jobs_per_sec);
        put("floor_cpu_main_us_per_task", f.cpu_main_us_per_job);
        put("floor_cpu_workers_us_per_task", f.cpu_workers_us_per_job);
    }
    if let Some(c) = ratios {
        put("floor_p50_ms", c.floor_p50);
        put("floor_p99_ms", c.floor_p99);
        put("ratio_throughput", c.throughput);
        put("over_floor_p50_ms", c.over_p50);
        put("over_floor_p99_ms", c.over_p99);
        put("ratio_p50", c.ratio_p50);
        put("ratio_p99", c.ratio_p99);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(rate: f64, p50: Option<f64>, p99: Option<f64>) -> Report {
        Report {
            tasks_per_sec: rate,
            p50_ms: p50,
            p99_ms: p99,
            ..Report::default()
        }
    }

    fn rate_floor(rate: f64) -> Option<Floor> {
        Some(Floor {
            kind: "bare".into(),
            jobs_per_sec: Some(rate),
            ..Floor::default()
        })
    }

    fn lat_floor(p50: f64, p99: f64) -> Option<Floor> {
        Some(Floor {
            kind: "arrival".into(),
            p50_ms: Some(p50),
            p99_ms: Some(p99),
            ..Floor::default()
        })
    }

    #[test]
    fn throughput_ratio_is_the_median_of_paired_rounds() {
        // Round ratios 0.5, 0.9, 0.8: the median is 0.8, not 90/110 (ratio of the medians).
        let rounds = vec![
            Round {
                floor: rate_floor(100.0),
                report: rep(50.0, None, None),
            },
            Round {
                floor: rate_floor(110.0),
                report: rep(99.0, None, None),
            },
            Round {
                floor: rate_floor(120.0),
                report: rep(96.0, None, None),
            },
        ];
        let r = combine(Compare::Throughput, rounds).unwrap();
        assert_eq!(r.tasks_per_sec, 96.0);
        assert_eq!(r.floor_jobs_per_sec, Some(110.0));
        assert_eq!(r.ratio_throughput, Some(0.8));
        assert_eq!(r.rounds, Some(3));
        assert_eq!(r.runs.len(), 3);
        assert_eq!(r.runs[1]["ratio_throughput"], json!(0.9));
        assert_eq!(r.runs[0]["floor_jobs_per_sec"], json!(100.0));
        assert!(r.runs[0].get("over_floor_p50_ms").is_none());
        assert_eq!(r.floor_kind.as_deref(), Some("bare"));
        assert_eq!(r.over_floor_p50_ms, None);
    }

    #[test]
    fn latency_over_floor_is_a_difference_and_control_counts_two_legs() {
        let rounds = vec![
            Round {
                floor: lat_floor(0.2, 0.4),
                report: rep(0.0, Some(0.3), Some(0.7)),
            },
            Round {
                floor: lat_floor(0.3, 0.5),
                report: rep(0.0, Some(0.35), Some(0.6)),
            },
        ];
        let r = combine(Compare::Latency { legs: 1.0 }, rounds.clone()).unwrap();
        assert_eq!(r.floor_p50_ms, Some(0.25));
        assert_eq!(r.floor_p99_ms, Some(0.45));
        // Per round: +0.1 and +0.05 (p50), +0.3 and +0.1 (p99).
        assert_eq!(r.over_floor_p50_ms, Some(0.075));
        assert_eq!(r.over_floor_p99_ms, Some(0.2));
        assert_eq!(r.p50_ms, Some(0.325));
        assert_eq!(r.floor_arrival_p50_ms, None);
        assert_eq!(r.ratio_throughput, None);

        let c = combine(Compare::Latency { legs: 2.0 }, rounds).unwrap();
        assert_eq!(c.floor_p50_ms, Some(0.5));
        assert_eq!(c.floor_arrival_p50_ms, Some(0.25));
        assert_eq!(c.runs[0]["floor_p50_ms"], json!(0.4));
        assert_eq!(c.runs[0]["ratio_p50"], json!(0.75));
        // Per round: 0.3 / 0.4 = 0.75 and 0.35 / 0.6 = 0.583.
        assert_eq!(c.ratio_p50, Some(0.667));
        assert_eq!(c.over_floor_p50_ms, Some(-0.175));
    }

    #[test]
    fn a_single_round_keeps_its_figures_and_no_floor_gives_no_ratio() {
        let mut one = rep(1234.0, Some(1.0), Some(2.0));
        one.seconds = 3.0;
        let r = combine(
            Compare::Throughput,
            vec![Round {
                floor: None,
                report: one,
            }],
        )
        .unwrap();
        assert_eq!(r.tasks_per_sec, 1234.0);
        assert_eq!(r.ratio_throughput, None);
        assert_eq!(r.floor_kind, None);
        assert!(r.runs.is_empty());
        assert!(combine(Compare::Throughput, Vec::new()).is_err());
    }

    #[test]
    fn a_zero_floor_gives_no_ratio() {
        let f = Floor {
            jobs_per_sec: Some(0.0),
            ..Floor::default()
        };
        assert_eq!(
            ratios(Compare::Throughput, &rep(10.0, None, None), &f).throughput,
            None
        );
    }
}
