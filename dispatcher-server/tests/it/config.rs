//! The configuration file: an unknown key stops the service with status 2 and a message naming
//! the key and the file.

use tokio::process::Command;

use crate::support::temp_dir;
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
