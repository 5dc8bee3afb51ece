//! [`Link`]: the sending side of a worker's socket, written without waiting.

use std::sync::Arc;

use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::Notify;

/// The sending side of a worker's socket.
///
/// Frames are written by whoever holds the pool's state lock, without waiting: the service
/// (`try_dispatch`) writes a job straight into the socket, so a dispatch costs no hop through
/// another task. What the socket cannot take at once goes to `backlog`, which the worker's
/// supervisor writes when the socket has room; while it is not empty, later frames queue behind
/// it, so frames never interleave.
#[derive(Debug)]
pub(crate) struct Link {
    wr: Arc<OwnedWriteHalf>,
    backlog: Vec<u8>,
    /// Wakes the worker's supervisor when the backlog needs writing.
    flush: Arc<Notify>,
}

impl Link {
    pub(crate) fn new(wr: Arc<OwnedWriteHalf>, flush: Arc<Notify>) -> Self {
        Link {
            wr,
            backlog: Vec::new(),
            flush,
        }
    }

    /// Writes `frame` now or queues it behind the backlog. An error means nothing of it was
    /// written and the connection is broken.
    pub(crate) fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        if !self.backlog.is_empty() {
            self.backlog.extend_from_slice(frame);
            return Ok(());
        }
        let mut written = 0;
        while written < frame.len() {
            match self.wr.try_write(&frame[written..]) {
                Ok(0) => {
                    if written == 0 {
                        return Err(std::io::ErrorKind::WriteZero.into());
                    }
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Part of the frame is out: the rest goes to the backlog, whose writer meets
                // the same error and ends the worker.
                Err(_) if written > 0 => break,
                Err(e) => return Err(e),
            }
        }
        if written < frame.len() {
            self.backlog.extend_from_slice(&frame[written..]);
            self.flush.notify_one();
        }
        Ok(())
    }

    /// Writes as much of the backlog as the socket takes now; true when it is empty.
    pub(crate) fn write_backlog(&mut self) -> std::io::Result<bool> {
        while !self.backlog.is_empty() {
            match self.wr.try_write(&self.backlog) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.backlog.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixStream;

    #[tokio::test]
    async fn link_queues_what_the_socket_cannot_take_and_keeps_the_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let (_keep, wa) = a.into_split();
        let mut link = Link::new(Arc::new(wa), Arc::new(Notify::new()));
        let big: Vec<u8> = (0..4_000_000u32).map(|i| i as u8).collect();
        link.send(&big).unwrap();
        assert!(!link.backlog.is_empty(), "a socket takes no 4 MB at once");
        link.send(b"tail").unwrap();
        let reader = tokio::spawn(async move {
            let mut b = b;
            let mut out = Vec::new();
            b.read_to_end(&mut out).await.unwrap();
            out
        });
        let wr = link.wr.clone();
        while !link.write_backlog().unwrap() {
            wr.writable().await.unwrap();
        }
        drop((link, wr));
        let got = reader.await.unwrap();
        assert_eq!(got.len(), big.len() + 4);
        assert_eq!(&got[..big.len()], &big[..]);
        assert_eq!(&got[big.len()..], b"tail");
    }
}
