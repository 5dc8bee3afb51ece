//! The configuration file's parsing and checks.

use super::*;

#[test]
fn the_example_parses() {
    let c = ServerConfig::from_toml(EXAMPLE).unwrap();
    assert_eq!(c.node_id.as_deref(), Some("worker-1"));
    assert_eq!(c.pool.max_tasks_per_worker, Some(10000));
    assert_eq!(c.metrics.unwrap().address, "127.0.0.1:9187");
    assert_eq!(c.pool.max_worker_memory_mb, Some(512));
    assert_eq!(c.limits.max_partial_messages, 1024);
    assert_eq!(
        c.pool.worker_scheduling,
        dispatcher_pool::WorkerScheduling::Batch
    );
    assert_eq!(c.release_memory_after, 10_000);
}

#[test]
fn the_readme_shows_this_example() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("### Configuration file")
        .expect("README has the section");
    let block = &readme[start..];
    let a = block.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let b = block[a..].find("```").expect("the block ends") + a;
    assert_eq!(
        &block[a..b],
        EXAMPLE,
        "README.md's configuration example differs from config::EXAMPLE"
    );
}

#[test]
fn empty_file_is_all_defaults() {
    let c = ServerConfig::from_toml("").unwrap();
    assert_eq!(c.channels, ["dispatcher"]);
    assert_eq!(c.history_size, 10_000);
    assert_eq!(c.history_max_bytes, 64 * 1024 * 1024);
    assert_eq!(c.pool.min_workers, 4);
    assert_eq!(
        c.pool.worker_scheduling,
        dispatcher_pool::WorkerScheduling::Batch
    );
    assert_eq!(c.release_memory_after, 10_000);
}

#[test]
fn unknown_keys_are_named() {
    let e = ServerConfig::from_toml("colour = 3")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `colour`"), "{e}");
    let e = ServerConfig::from_toml("[pool]\nworkers = 3")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown field `workers`") && e.contains("min_workers"),
        "{e}"
    );
    let e = ServerConfig::from_toml("[metric]\naddress = \"x\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `metric`"), "{e}");
}

#[test]
fn connection_strings_are_not_shown_by_debug_nor_by_errors() {
    let c = ServerConfig::from_toml(
        "[broker]\nurl = \"postgres://app:TOPSECRET@db/app?sslpassword=TOPSECRET\"",
    )
    .unwrap();
    let shown = format!("{c:?}");
    assert!(
        shown.contains("postgres://app:***@db/app?sslpassword=***"),
        "{shown}"
    );
    assert!(!shown.contains("TOPSECRET"), "{shown}");
    for text in [
        "[broker]\nurl = \"postgres://app:TOPSECRET@db/app\" junk",
        "[broker]\nurll = \"postgres://app@db/app?password=TOPSECRET\"",
        "[broker]\nurl = postgres://app:TOPSECRET@db/app",
        "[broker]\nurll = \"host=db password='TOP SECRET' user=app\"",
    ] {
        let e = ServerConfig::from_toml(text).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{text:?}: {e}");
        assert!(!e.contains("SECRET"), "{text:?}: {e}");
    }
    let e = ServerConfig::from_toml("[broker]\nurll = \"postgres://app:TOPSECRET@db/app\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("postgres://app:***@db/app"), "{e}");
    assert!(e.contains("unknown field `urll`"), "{e}");
}

#[test]
fn bad_values_name_key_and_form() {
    let cases = [
        (
            "history_size = \"lots\"",
            "wrong kind of value: string \"lots\", expected a whole number (0 or more)",
        ),
        ("history_size = -3", "expected a whole number (0 or more)"),
        (
            "shutdown_grace = -1",
            "`shutdown_grace` must be a number of seconds above 0",
        ),
        (
            "[pool]\nmin_workers = 5\nmax_workers = 2",
            "`pool.min_workers` (5) must not exceed `pool.max_workers` (2)",
        ),
        ("[pool]\nkill_grace = 0", "`pool.kill_grace`"),
        (
            "[metrics]\naddress = \"nowhere\"",
            "`metrics.address` = \"nowhere\": no port; give host:port",
        ),
        ("channels = []", "`channels` must list at least one channel"),
        ("channels = [\"\"]", "invalid channel name"),
        ("log_level = \"info,[\"", "`log_level`"),
        (
            "[broker]\nself_check_interval = 0",
            "`broker.self_check_interval`",
        ),
        (
            "[limits]\nmax_payload_bytes = 0",
            "`limits.max_payload_bytes` must be at least 1",
        ),
        ("[limits]\npartial_expiry = -2", "`limits.partial_expiry`"),
        (
            "[pool]\nworker_scheduling = \"fast\"",
            "unknown variant `fast`, expected `batch` or `normal`",
        ),
        (
            "release_memory_after = -1",
            "expected a whole number (0 or more)",
        ),
        (
            "[security]\nsigning_secret = \"x\"",
            "unknown field `signing_secret`",
        ),
    ];
    for (text, want) in cases {
        let e = ServerConfig::from_toml(text).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
        assert_eq!(e.matches("configuration").count(), 1, "{e}");
    }
    for ok in [
        "localhost:9187",
        "127.0.0.1:9187",
        "[::1]:9187",
        "metrics-host.internal:1",
    ] {
        let c = ServerConfig::from_toml(&format!("[metrics]\naddress = \"{ok}\""));
        assert!(c.is_ok(), "{ok}: {c:?}");
    }
    for bad in ["localhost", "localhost:99999", ":9187", "a b:1"] {
        let e = ServerConfig::from_toml(&format!("[metrics]\naddress = \"{bad}\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("{bad:?}")), "{e}");
    }
}
