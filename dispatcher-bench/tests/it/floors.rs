//! The same-run floors: the bare process pool, raw NOTIFY arrival, and scenarios reporting
//! their figures beside them. Functional checks only (the figures exist and are positive); no
//! timing thresholds.

use std::process::Command;

use dispatcher_testkit::postgres::PgFixture;
use serde_json::Value;

/// Runs the bench with `args` and returns its report.
fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_dispatcher-bench"))
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("the bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dispatcher-bench {args:?} failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().expect("a report line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn positive(report: &Value, field: &str) -> f64 {
    let v = report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {report}"));
    assert!(v > 0.0, "{field} = {v} in {report}");
    v
}

#[test]
fn the_bare_pool_runs_every_job_through_its_workers() {
    let r = bench(&["floor-pool", "--tasks", "300", "--workers", "2"]);
    assert_eq!(r["scenario"], "floor-pool");
    assert_eq!(r["tasks"], 300);
    positive(&r, "tasks_per_sec");
    assert!(r["floor_kind"]
        .as_str()
        .unwrap()
        .contains("2 worker processes"));
}

#[test]
fn pool_reports_each_round_beside_its_bare_pool_floor() {
    let r = bench(&["pool", "--tasks", "300", "--workers", "2", "--rounds", "2"]);
    assert_eq!(r["rounds"], 2);
    positive(&r, "tasks_per_sec");
    positive(&r, "floor_jobs_per_sec");
    positive(&r, "ratio_throughput");
    let runs = r["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    for run in runs {
        positive(run, "floor_jobs_per_sec");
        positive(run, "ratio_throughput");
    }
    assert_eq!(r["outcomes"]["ok"], 300);
}

#[tokio::test]
async fn the_notify_floor_measures_every_arrival() {
    let fx = PgFixture::new().await.unwrap();
    let url = fx.url();
    let r = bench(&[
        "floor-notify",
        "--tasks",
        "30",
        "--pause-ms",
        "1",
        "--database-url",
        &url,
    ]);
    let p50 = positive(&r, "p50_ms");
    let p99 = positive(&r, "p99_ms");
    assert!(p99 >= p50, "{r}");
    assert!(r["floor_kind"].as_str().unwrap().contains("30 messages"));
}

#[tokio::test]
async fn latency_and_control_report_the_arrival_floor() {
    let fx = PgFixture::new().await.unwrap();
    let url = fx.url();
    let r = bench(&[
        "latency",
        "--tasks",
        "30",
        "--rounds",
        "2",
        "--workers",
        "1",
        "--database-url",
        &url,
    ]);
    positive(&r, "p50_ms");
    let floor = positive(&r, "floor_p50_ms");
    positive(&r, "floor_p99_ms");
    let over = r["over_floor_p50_ms"].as_f64().expect("over_floor_p50_ms");
    assert!(over.is_finite(), "{r}");
    assert_eq!(r["runs"].as_array().map(Vec::len), Some(2));
    assert!(floor < 1000.0, "{r}");

    let c = bench(&[
        "control",
        "--tasks",
        "20",
        "--rounds",
        "1",
        "--workers",
        "1",
        "--database-url",
        &url,
    ]);
    let one = positive(&c, "floor_arrival_p50_ms");
    let two = positive(&c, "floor_p50_ms");
    // Twice one arrival (each rounded to the microsecond).
    assert!((two - 2.0 * one).abs() <= 0.002, "{c}");
    positive(&c, "ratio_p50");
}

#[tokio::test]
async fn pg_compares_with_raw_notify_unbatched_and_with_the_bare_pool_batched() {
    let fx = PgFixture::new().await.unwrap();
    let url = fx.url();
    let r = bench(&[
        "pg",
        "--tasks",
        "200",
        "--rounds",
        "1",
        "--raw",
        "loop",
        "--raw-seconds",
        "1",
        "--database-url",
        &url,
    ]);
    let raw = positive(&r, "floor_jobs_per_sec");
    assert_eq!(r["raw_notify_per_sec"].as_f64(), Some(raw), "{r}");
    assert_eq!(r["ratio_to_raw"], r["ratio_throughput"], "{r}");
    positive(&r, "ratio_throughput");
    assert!(r["floor_kind"].as_str().unwrap().contains("pg_notify"));

    let b = bench(&[
        "pg",
        "--tasks",
        "200",
        "--batch",
        "50",
        "--rounds",
        "2",
        "--raw",
        "none",
        "--database-url",
        &url,
    ]);
    positive(&b, "floor_jobs_per_sec");
    positive(&b, "ratio_throughput");
    assert!(b["floor_kind"]
        .as_str()
        .unwrap()
        .contains("bare process pool"));
    assert!(b.get("raw_notify_per_sec").is_none(), "{b}");
    // Each round's own Calls, not the service's running total.
    assert_eq!(b["outcomes"]["ok"], 200, "{b}");
}
