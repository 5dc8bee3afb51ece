//! Memory freed after a burst of Calls goes back to the system (`release_memory_after`).

use std::time::{Duration, Instant};

use dispatcher_core::TaskMessage;
use serde_json::json;

use crate::support::{start, Svc, WAIT};

const RELEASED: &str = "a burst of Calls is over: free memory handed back to the system";

async fn run_adds(svc: &Svc, n: usize, already: usize) {
    let p = svc.publisher();
    for i in 0..n {
        let mut m = TaskMessage::new("srv.add");
        m.args = vec![json!(i), json!(1)];
        p.publish_message(svc.channel.clone(), m).await.unwrap();
    }
    svc.wait_history(already + n).await;
}

/// Under the threshold nothing is released, however long the service idles; the first quiet
/// second after the threshold releases once.
pub async fn freed_memory_goes_back_once_a_burst_is_over() {
    let mut svc = start(
        "release_memory_after = 5\nlog_level = \"info,dispatcher_runtime=debug,dispatcher_server=debug\"\n",
    )
    .await;
    run_adds(&svc, 3, 0).await;
    // Two quiet ticks of the housekeeper (one per second) with only 3 Calls finished.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !svc.log().contains(RELEASED),
        "released after 3 Calls:\n{}",
        svc.log()
    );
    run_adds(&svc, 2, 3).await;
    let t = Instant::now();
    while !svc.log().contains(RELEASED) {
        assert!(
            t.elapsed() < WAIT,
            "never released after 5 Calls:\n{}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = svc
        .log()
        .lines()
        .find(|l| l.contains(RELEASED))
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("done=true"), "{line}");
    assert!(line.contains("finished=5"), "{line}");
    // Once per burst: more quiet seconds release nothing more.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(svc.log().matches(RELEASED).count(), 1, "{}", svc.log());
    svc.sigterm();
    assert_eq!(svc.wait_exit().await.code(), Some(0));
}
