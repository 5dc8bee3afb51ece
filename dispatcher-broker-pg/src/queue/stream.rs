//! The subscription a claim loop feeds: when the service drops it (at shutdown, or after it
//! stopped reading), the messages still buffered in it are given back at once, untouched,
//! instead of waiting for their lease to expire and counting an attempt.

use std::pin::Pin;
use std::task::{Context, Poll};

use dispatcher_core::broker::Incoming;
use dispatcher_core::delivery::Settlement;
use futures_util::Stream;
use tokio::sync::mpsc;

/// A receiver of claimed messages that releases what it still holds when dropped.
#[derive(Debug)]
pub(crate) struct Claimed(pub(crate) mpsc::Receiver<Incoming>);

impl Stream for Claimed {
    type Item = Incoming;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        self.0.poll_recv(cx)
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        self.0.close();
        let mut released = 0usize;
        while let Ok(m) = self.0.try_recv() {
            if let Some(d) = m.delivery {
                d.settle(Settlement::Release);
                released += 1;
            }
        }
        if released > 0 {
            tracing::debug!(released, "gave back claimed jobs the service did not take");
        }
    }
}
