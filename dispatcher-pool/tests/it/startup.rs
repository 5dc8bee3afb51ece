//! Start-up: a program that cannot be a worker makes the pool fail to start, saying why.

use std::process::ExitCode;
use std::time::Duration;

use dispatcher_core::TaskRegistry;
use dispatcher_pool::ProcessPool;

use crate::support::config;
use crate::tasks;

/// Run in a child process that has the worker marker but starts a pool, as an application that
/// forgot the entry call would.
pub fn forgetful_main(registry: TaskRegistry) -> ExitCode {
    let Ok(rt) = tokio::runtime::Runtime::new() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async {
        let r = dispatcher_runtime::Service::builder()
            .registry(registry)
            .pool(ProcessPool::new(1))
            .start()
            .await;
        match r {
            Ok(_) => println!("started"),
            Err(e) => println!("{e}"),
        }
    });
    ExitCode::from(3)
}

pub async fn forgotten_entry_call_fails_loudly() {
    let exe = std::env::current_exe().unwrap();
    let out = tokio::process::Command::new(exe)
        .env("POOL_TEST_FORGETFUL", "1")
        .env(
            dispatcher_pool::protocol::ENV_SOCKET,
            "/nonexistent/pool.sock",
        )
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("call `dispatcher_pool::run_if_worker(...)` first thing in `main`"),
        "{text}"
    );
}

pub async fn worker_that_never_connects_fails_start() {
    let mut c = config(1, 1);
    c.program = Some("/bin/true".into());
    c.start_timeout = Duration::from_secs(2);
    let r = dispatcher_runtime::Service::builder()
        .registry(tasks::registry())
        .pool(ProcessPool::with_config(c))
        .start()
        .await;
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("before connecting") && e.contains("run_if_worker"),
        "{e}"
    );
}
