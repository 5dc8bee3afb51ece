//! [`WorkerScheduling`]: the kernel scheduling policy of worker processes.

use serde::Deserialize;

/// How the kernel schedules the worker processes ([`crate::ProcessPoolConfig::worker_scheduling`]).
///
/// A job wakes its worker. Under the default policy the woken worker usually preempts the
/// service on the core where the service is dispatching, in the middle of its loop, and every
/// Call then costs the service a second trip through the scheduler. A `SCHED_BATCH` worker never
/// preempts on waking: it runs at once on an idle core, and otherwise as soon as the service
/// waits for its next message (or at the scheduler's next tick). Measured with
/// `dispatcher-bench pool` on two cores: 1.4× the throughput of `Normal`, with the same
/// publish-to-start latency. The policy is inherited by whatever a task starts. A worker keeps
/// its nice value; a machine that runs other CPU-bound work at the same time still shares each
/// core fairly with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum WorkerScheduling {
    /// `SCHED_BATCH` (Linux): woken workers do not preempt the running service. The default.
    #[default]
    Batch,
    /// The policy processes get by default (`SCHED_OTHER`).
    Normal,
}

impl WorkerScheduling {
    /// The policy's name, as the configuration file and the worker's environment variable
    /// (`crate::protocol::ENV_SCHED`) spell it: `batch` or `normal`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerScheduling::Batch => "batch",
            WorkerScheduling::Normal => "normal",
        }
    }

    /// Puts the calling process (all its threads created afterwards, and the processes it
    /// starts) under this policy, as a worker does when it starts. `Normal` leaves the process
    /// as it is. An error is the kernel's refusal; elsewhere than on Linux this does nothing.
    pub fn apply_to_this_process(self) -> std::io::Result<()> {
        match self {
            WorkerScheduling::Batch => set_batch(),
            WorkerScheduling::Normal => Ok(()),
        }
    }

    /// In the worker: adopts the policy its pool asked for (`value`: the environment variable).
    /// Failing to is not fatal (the worker runs under the policy it has) and is logged.
    pub(crate) fn adopt(value: Option<&str>) {
        if let Some(policy) = value.and_then(|v| v.parse::<WorkerScheduling>().ok()) {
            if let Err(e) = policy.apply_to_this_process() {
                tracing::warn!(error = %e, "the worker could not switch to SCHED_BATCH; it runs under its inherited policy");
            }
        }
    }
}

impl std::fmt::Display for WorkerScheduling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WorkerScheduling {
    type Err = crate::Error;

    /// `batch` or `normal`, in any case.
    fn from_str(s: &str) -> Result<Self, crate::Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "batch" => Ok(WorkerScheduling::Batch),
            "normal" => Ok(WorkerScheduling::Normal),
            _ => Err(crate::Error::UnknownScheduling(s.to_owned())),
        }
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_batch() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, initialised sched_param that outlives the call; pid 0 is this
    // process, and SCHED_BATCH takes priority 0.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_batch() -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::WorkerScheduling;

    #[test]
    fn names_round_trip() {
        for p in [WorkerScheduling::Batch, WorkerScheduling::Normal] {
            assert_eq!(p.as_str().parse::<WorkerScheduling>().unwrap(), p);
        }
        assert_eq!(
            " Batch ".parse::<WorkerScheduling>().unwrap(),
            WorkerScheduling::Batch
        );
        let e = "fast".parse::<WorkerScheduling>().unwrap_err().to_string();
        assert!(
            e.contains("\"fast\"") && e.contains("\"batch\" or \"normal\""),
            "{e}"
        );
    }
}
