//! The testkit's pool conformance suite on `ProcessPool`, with pools of two workers and of one.
//! The suite's tasks run in worker processes (this binary started again), so `tasks::registry`
//! includes them.

use dispatcher_pool::ProcessPool;
use dispatcher_testkit::conformance::pool::PoolCheck;
use libtest_mimic::{Failed, Trial};

use crate::support::config;

/// One trial per check and pool size, named `conformance::pool_of_<size>::<check>`.
pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for workers in [2, 1] {
        for check in PoolCheck::ALL {
            let name = format!("conformance::pool_of_{workers}::{}", check.name());
            trials.push(Trial::test(name, move || run(check, workers)));
        }
    }
    trials
}

fn run(check: PoolCheck, workers: usize) -> Result<(), Failed> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| Failed::from(e.to_string()))?;
    rt.block_on(check.run(&|| ProcessPool::with_config(config(workers, workers))))
        .map_err(|e| Failed::from(e.to_string()))
}
