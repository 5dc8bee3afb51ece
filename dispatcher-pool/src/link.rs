//! [`Link`]: the sending side of a worker's socket, written without waiting; [`Socket`]: the
//! socket itself, registered for input only.

use std::io::Write;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

/// A worker's connected socket, shared by its reader (in the service's task), its [`Link`] and
/// its supervisor.
///
/// It is registered with the runtime for input only. Registered for output too (as a tokio
/// `UnixStream` is), it would wake the runtime every time the worker reads a job, since the
/// kernel then announces room to write on the pool's side: a wake-up per Call for nothing. The
/// rare wait for room (a frame larger than the socket takes at once) registers a second handle
/// for output only while it waits ([`wait_writable`]).
pub(crate) type Socket = AsyncFd<StdUnixStream>;

/// The [`Socket`] of a connected worker (after its hello).
pub(crate) fn socket(stream: tokio::net::UnixStream) -> std::io::Result<Arc<Socket>> {
    // Non-blocking, as tokio left it.
    let stream = stream.into_std()?;
    Ok(Arc::new(register(stream, Interest::READABLE)?))
}

/// Registers `stream` with the runtime for `interest` only.
#[allow(unsafe_code)]
fn register(stream: StdUnixStream, interest: Interest) -> std::io::Result<Socket> {
    // SAFETY: the AsyncFd owns `stream`, which owns its file descriptor: it stays open and
    // refers to the same socket until the AsyncFd is dropped, and `as_raw_fd` always returns it.
    unsafe { AsyncFd::register_with_interest(stream, interest) }.map_err(|e| e.into_parts().1)
}

/// Registers `socket` for output while `write` makes progress: calls `write` until it returns
/// `Ok(true)` (done), waiting for room in the socket each time it returns `Ok(false)`.
pub(crate) async fn wait_writable(
    socket: &Socket,
    mut write: impl FnMut() -> std::io::Result<bool>,
) -> std::io::Result<()> {
    if write()? {
        return Ok(());
    }
    let out = register(socket.get_ref().try_clone()?, Interest::WRITABLE)?;
    loop {
        let mut ready = out.writable().await?;
        if write()? {
            return Ok(());
        }
        // Still full: wait for the next announcement of room.
        ready.clear_ready();
    }
}

/// The sending side of a worker's socket.
///
/// Frames are written by whoever holds the pool's state lock, without waiting: the service
/// (`try_dispatch`) writes a job straight into the socket, so a dispatch costs no hop through
/// another task. What the socket cannot take at once goes to `backlog`, which the worker's
/// supervisor writes when the socket has room; while it is not empty, later frames queue behind
/// it, so frames never interleave.
#[derive(Debug)]
pub(crate) struct Link {
    socket: Arc<Socket>,
    backlog: Vec<u8>,
    /// Wakes the worker's supervisor when the backlog needs writing.
    flush: Arc<Notify>,
}

impl Link {
    pub(crate) fn new(socket: Arc<Socket>, flush: Arc<Notify>) -> Self {
        Link {
            socket,
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
            match self.socket.get_ref().write(&frame[written..]) {
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
            match self.socket.get_ref().write(&self.backlog) {
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

    /// Both ends of a connected pair: the pool's as a [`Socket`], the worker's as a tokio stream.
    fn pair() -> (Arc<Socket>, tokio::net::UnixStream) {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        (socket(a).unwrap(), b)
    }

    #[tokio::test]
    async fn link_queues_what_the_socket_cannot_take_and_keeps_the_order() {
        let (a, b) = pair();
        let mut link = Link::new(a.clone(), Arc::new(Notify::new()));
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
        wait_writable(&a, || link.write_backlog()).await.unwrap();
        drop((link, a));
        let got = reader.await.unwrap();
        assert_eq!(got.len(), big.len() + 4);
        assert_eq!(&got[..big.len()], &big[..]);
        assert_eq!(&got[big.len()..], b"tail");
    }
}
