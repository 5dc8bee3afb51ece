//! The configuration file: an unknown key stops the service with status 2 and a message naming
//! the key and the file.

use tokio::process::Command;

use crate::support::{run_config, temp_dir};
use crate::SERVICE_CONFIG_ENV;

pub async fn bad_config_file_names_the_key() {
    let dir = temp_dir();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "channels = [\"x\"]\n[pool]\nworkers = 3\n").unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .env(SERVICE_CONFIG_ENV, &path)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown field `workers`") && err.contains("bad.toml"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `log_level = "loud"` stops the service at start with a message naming the key, the value
/// and the levels it takes (it used to be taken as a target name and silence every line).
pub async fn bad_log_level_fails_at_start() {
    let out = run_config("log_level = \"loud\"\n").await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`log_level` = \"loud\""), "{err}");
    assert!(
        err.contains("trace, debug, info, warn, error, off"),
        "{err}"
    );
    assert_eq!(err.matches("configuration").count(), 1, "{err}");
}

/// A value of the wrong kind is told in words (no Rust type names), and "configuration" once.
pub async fn wrong_kind_of_value_in_words() {
    let out = run_config("history_size = \"lots\"\n").await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("expected a whole number"), "{err}");
    assert!(err.contains("history_size = \"lots\""), "{err}");
    assert!(!err.contains("usize"), "{err}");
    assert_eq!(err.matches("configuration").count(), 1, "{err}");
    let out = run_config("log_format = \"xml\"\n").await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("log_format") && err.contains("`text`") && err.contains("`json`"),
        "{err}"
    );
}

/// A metrics host name that does not resolve stops the service at start, naming it.
pub async fn unresolvable_metrics_host_is_named() {
    let out = run_config("[metrics]\naddress = \"no-such-host.invalid:9187\"\n").await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no-such-host.invalid:9187"), "{err}");
    assert!(err.contains("does not resolve"), "{err}");
}

/// `[broker] connect_timeout` bounds the whole connect: against a port that accepts TCP but
/// never answers, the service stops at start after it, naming the address and the timeout.
pub async fn connect_timeout_from_the_file_bounds_start_up() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let out = run_config(&format!(
        "[broker]\nurl = \"postgres://postgres:TOPSECRET@127.0.0.1:{port}/x\"\nconnect_timeout = 1.0\ncall_timeout = 2.0\n"
    ))
    .await;
    let took = started.elapsed();
    drop(silent);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(!err.contains("TOPSECRET"), "{err}");
    // The default is 5 s: stopping well before it shows the key was applied.
    assert!(
        took < std::time::Duration::from_secs(4),
        "start-up took {took:?}: connect_timeout = 1.0 was not applied"
    );
}
