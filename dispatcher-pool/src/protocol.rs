//! The IPC protocol between the pool and a worker: length-prefixed JSON frames over a Unix
//! socket (never the worker's stdout/stderr, which task code may write to).
//!
//! A frame is a 4-byte little-endian length followed by that many bytes of JSON.
//!
//! There is one frame decoder (the length prefix, its [`MAX_FRAME`] check and the JSON decode),
//! and every reader goes through it, so all refuse the same sizes and decode alike. They differ
//! only in how the bytes arrive: the pool's handshake reads a worker's hello with async reads,
//! the service task reads every worker's socket through a cancel-safe buffer it polls, and the
//! worker reads its socket with blocking reads.

use std::io::{Read, Write};
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, Result};

/// Largest frame accepted, in bytes.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Bytes in a frame's length prefix.
const PREFIX: usize = 4;

/// Environment variable naming the socket a worker connects to; its presence is the worker marker.
pub const ENV_SOCKET: &str = "DISPATCHER_WORKER_SOCKET";
/// Environment variable with the worker's id.
pub const ENV_WORKER_ID: &str = "DISPATCHER_WORKER_ID";
/// Environment variable with the token a worker presents when it connects.
pub const ENV_TOKEN: &str = "DISPATCHER_WORKER_TOKEN";
/// Environment variable naming the file whose first word the worker shares with the pool to
/// settle who owns a job queued behind the running one (see `Run::queued`).
pub const ENV_CLAIM: &str = "DISPATCHER_WORKER_CLAIM";
/// Environment variable with the scheduling policy the worker adopts (`batch` or `normal`; see
/// [`crate::WorkerScheduling`]).
pub const ENV_SCHED: &str = "DISPATCHER_WORKER_SCHED";

/// Pool to worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToWorker {
    /// Run a task.
    Run {
        /// The pool's key for the Call.
        key: u64,
        /// The Call's uuid.
        uuid: String,
        /// Task name.
        task: String,
        /// Bound arguments.
        args: Vec<Value>,
        /// Which run of the Call this is (1 for a first run); a frame without it is a first run.
        #[serde(default = "first_attempt")]
        attempt: u32,
        /// Sent while the worker runs another job, on this claim word: the worker runs it only if
        /// it wins the word (the pool may take it back meanwhile). Absent: run it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queued: Option<u8>,
    },
    /// Answer with a pong.
    Ping {
        /// Echoed back.
        n: u64,
    },
    /// Finish and exit.
    Stop,
}

/// The attempt of a `Run` frame that does not say: a first run.
fn first_attempt() -> u32 {
    1
}

/// Worker to pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum FromWorker {
    /// First frame on a connection.
    Hello {
        /// The worker's id (from the environment).
        worker_id: u32,
        /// The token from the environment.
        token: String,
        /// Process id.
        pid: u32,
    },
    /// A task ended.
    Done {
        /// The key from `Run`.
        key: u64,
        /// `ok`, `error` or `panic`.
        outcome: dispatcher_core::Outcome,
        /// Result for `ok`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        /// Error text otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// When the worker started the job, epoch seconds; sent for a job that was queued (the
        /// pool learns of its start only from the report of the job before it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started: Option<f64>,
        /// When the job ended in the worker, epoch seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ended: Option<f64>,
    },
    /// Answer to a ping.
    Pong {
        /// The ping's number.
        n: u64,
    },
    /// A running task submitted another task.
    Submit {
        /// The submitting Call's uuid.
        parent_uuid: String,
        /// The message.
        message: dispatcher_core::TaskMessage,
    },
}

/// Encodes a frame (length prefix and JSON) into `buf`.
pub fn encode<T: Serialize>(msg: &T, buf: &mut Vec<u8>) -> Result<()> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; PREFIX]);
    serde_json::to_writer(&mut *buf, msg).map_err(Error::Encode)?;
    let len = buf.len() - start - PREFIX;
    if len > MAX_FRAME {
        buf.truncate(start);
        return Err(Error::FrameTooLarge(len));
    }
    buf[start..start + PREFIX].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Encodes a [`ToWorker::Run`] frame into `buf` from borrowed parts (the same bytes as encoding
/// the enum, without building it).
pub fn encode_run(
    key: u64,
    uuid: &str,
    task: &str,
    args: &[Value],
    attempt: u32,
    queued: Option<u8>,
    buf: &mut Vec<u8>,
) -> Result<()> {
    #[derive(Serialize)]
    #[serde(tag = "t", rename = "run")]
    struct Run<'a> {
        key: u64,
        uuid: &'a str,
        task: &'a str,
        args: &'a [Value],
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        queued: Option<u8>,
    }
    encode(
        &Run {
            key,
            uuid,
            task,
            args,
            attempt,
            queued,
        },
        buf,
    )
}

/// Encodes the `Run` frame of `job` into `buf` (queued on claim word `queued`, if any).
pub(crate) fn encode_job(
    job: &dispatcher_core::pool::Job,
    queued: Option<u8>,
    buf: &mut Vec<u8>,
) -> Result<()> {
    encode_run(
        job.key,
        &job.uuid,
        job.task.name(),
        &job.args,
        job.attempt,
        queued,
        buf,
    )
}

/// Writes one frame (blocking).
pub fn write_frame_blocking<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<()> {
    let mut buf = Vec::with_capacity(256);
    encode(msg, &mut buf)?;
    w.write_all(&buf).map_err(Error::Io)?;
    w.flush().map_err(Error::Io)
}

/// The body length a frame's length prefix announces; over [`MAX_FRAME`] the frame is refused.
/// With [`decode_body`], this is the one frame decoder every reader goes through.
fn body_len(prefix: [u8; PREFIX]) -> Result<usize> {
    let n = u32::from_le_bytes(prefix) as usize;
    if n > MAX_FRAME {
        return Err(Error::FrameTooLarge(n));
    }
    Ok(n)
}

/// Decodes a frame's body (the JSON after the length prefix).
pub(crate) fn decode_body<T: Frame>(body: &[u8]) -> Result<T> {
    T::decode(body)
}

/// A frame type: how its body is decoded.
///
/// The enums are internally tagged (`"t"`), which serde decodes by first buffering the whole
/// object; the frames sent once per Call (`run`, `done`) are decoded straight into their fields
/// instead when the tag comes first, as this module's encoder writes it. Anything else (another
/// frame, the tag elsewhere) takes the general path, so both decode the same bytes alike.
pub(crate) trait Frame: DeserializeOwned {
    /// Decodes a body.
    fn decode(body: &[u8]) -> Result<Self> {
        serde_json::from_slice(body).map_err(Error::Decode)
    }
}

/// The fields of a `run` frame, decoded without buffering (the tag is skipped as an unknown
/// field).
#[derive(Deserialize)]
struct RunFields {
    key: u64,
    uuid: String,
    task: String,
    args: Vec<Value>,
    #[serde(default = "first_attempt")]
    attempt: u32,
    #[serde(default)]
    queued: Option<u8>,
}

/// The fields of a `done` frame, decoded without buffering.
#[derive(Deserialize)]
struct DoneFields {
    key: u64,
    outcome: dispatcher_core::Outcome,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    started: Option<f64>,
    #[serde(default)]
    ended: Option<f64>,
}

impl Frame for ToWorker {
    fn decode(body: &[u8]) -> Result<Self> {
        if body.starts_with(br#"{"t":"run","#) {
            let f: RunFields = serde_json::from_slice(body).map_err(Error::Decode)?;
            return Ok(ToWorker::Run {
                key: f.key,
                uuid: f.uuid,
                task: f.task,
                args: f.args,
                attempt: f.attempt,
                queued: f.queued,
            });
        }
        serde_json::from_slice(body).map_err(Error::Decode)
    }
}

impl Frame for FromWorker {
    fn decode(body: &[u8]) -> Result<Self> {
        if body.starts_with(br#"{"t":"done","#) {
            let f: DoneFields = serde_json::from_slice(body).map_err(Error::Decode)?;
            return Ok(FromWorker::Done {
                key: f.key,
                outcome: f.outcome,
                result: f.result,
                error: f.error,
                started: f.started,
                ended: f.ended,
            });
        }
        serde_json::from_slice(body).map_err(Error::Decode)
    }
}

/// Reads one frame body (blocking). `Ok(None)` at a clean end of stream.
pub fn read_frame_blocking(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<Option<()>> {
    let mut prefix = [0u8; PREFIX];
    match r.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::Io(e)),
    }
    let n = body_len(prefix)?;
    buf.clear();
    buf.resize(n, 0);
    r.read_exact(buf).map_err(Error::Io)?;
    Ok(Some(()))
}

/// Reads and decodes one frame (blocking): the worker's reader. `Ok(None)` at a clean end of
/// stream. `buf` is reused for the body.
pub(crate) fn read_blocking<T: Frame>(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<Option<T>> {
    match read_frame_blocking(r, buf)? {
        Some(()) => decode_body(buf).map(Some),
        None => Ok(None),
    }
}

/// Reads and decodes one frame with async reads: the pool's handshake reader.
///
/// The body is kept as it arrives rather than in a buffer of the announced length made up front,
/// so a peer that has not presented its token yet cannot make the pool reserve [`MAX_FRAME`]
/// bytes just by announcing them.
pub(crate) async fn read_frame<T: Frame>(r: &mut (impl AsyncRead + Unpin)) -> Result<T> {
    let mut prefix = [0u8; PREFIX];
    r.read_exact(&mut prefix).await.map_err(Error::Io)?;
    let n = body_len(prefix)?;
    let mut body = Vec::new();
    let got = (&mut *r)
        .take(n as u64)
        .read_to_end(&mut body)
        .await
        .map_err(Error::Io)?;
    if got < n {
        return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    decode_body(&body)
}

/// Size of a [`FrameReader`]'s buffer; it grows for larger frames and shrinks back after them.
const READ_BUFFER: usize = 64 * 1024;

/// Reads frames from an async stream by polling: the service task's reader of each worker's
/// socket. Cancel-safe (bytes read are kept in the buffer), so it can be polled from
/// `Pool::poll_events` and dropped between polls without losing anything.
pub(crate) struct FrameReader<R> {
    r: R,
    /// `buf[start..end]` is read and not parsed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// Where a [`FrameReader`] reads from.
pub(crate) trait FrameSource {
    /// Reads what is there into `buf`; `Ready(Ok(0))` at the end of the stream.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>>;
}

/// Bytes in memory (tests).
impl FrameSource for &[u8] {
    fn poll_read_into(
        &mut self,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Read::read(self, buf))
    }
}

/// A worker's socket.
///
/// A read that returns less than asked emptied the socket's receive queue, so the socket is
/// marked not readable right there, and the next poll waits for the next frame instead of
/// asking the kernel again and hearing `EAGAIN`: one `read` per burst of frames rather than two.
/// The mark is cleared with the readiness seen before the read, so a frame that arrives after
/// it sets the socket readable again (tokio's readiness ticks), and nothing is missed.
impl FrameSource for std::sync::Arc<crate::link::Socket> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            let mut ready = std::task::ready!(self.poll_read_ready(cx))?;
            let mut got = 0;
            let read = ready.try_io(|socket| loop {
                match socket.get_ref().read(buf) {
                    Ok(n) => {
                        got = n;
                        // Short: the queue is empty now; `WouldBlock` clears the readiness.
                        return if n > 0 && n < buf.len() {
                            Err(std::io::ErrorKind::WouldBlock.into())
                        } else {
                            Ok(n)
                        };
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            });
            match read {
                Ok(result) => return Poll::Ready(result),
                // The readiness was cleared: after a short read, what it read; else the socket
                // was not readable after all, and the next turn waits.
                Err(_would_block) if got > 0 => return Poll::Ready(Ok(got)),
                Err(_would_block) => {}
            }
        }
    }
}

impl<R: FrameSource> FrameReader<R> {
    pub(crate) fn new(r: R) -> Self {
        FrameReader {
            r,
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
        }
    }

    /// The body length announced by the frame at `start`, once its prefix is in.
    fn announced(&self) -> Result<Option<usize>> {
        let prefix = self
            .buf
            .get(self.start..self.end)
            .and_then(|b| b.first_chunk::<PREFIX>());
        match prefix {
            Some(p) => body_len(*p).map(Some),
            None => Ok(None),
        }
    }

    fn parse<T: Frame>(&mut self) -> Result<Option<T>> {
        let Some(n) = self.announced()? else {
            return Ok(None);
        };
        if self.end - self.start < PREFIX + n {
            return Ok(None);
        }
        let body = &self.buf[self.start + PREFIX..self.start + PREFIX + n];
        let msg = decode_body(body)?;
        self.start += PREFIX + n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > READ_BUFFER {
                self.buf.truncate(READ_BUFFER);
                self.buf.shrink_to_fit();
            }
        }
        Ok(Some(msg))
    }

    /// The next frame; `Ok(None)` at the end of the stream.
    pub(crate) fn poll_frame<T: Frame>(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<T>>> {
        loop {
            if let Some(m) = self.parse()? {
                return Poll::Ready(Ok(Some(m)));
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                // A frame larger than the buffer (its size was checked by `parse`).
                let need = self.announced()?.map_or(0, |n| n + PREFIX);
                let len = need.max(self.buf.len() * 2);
                self.buf.resize(len, 0);
            }
            let n = match self.r.poll_read_into(cx, &mut self.buf[self.end..]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                Poll::Ready(Ok(n)) => n,
            };
            if n == 0 {
                return Poll::Ready(Ok(None));
            }
            self.end += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dispatcher_core::Outcome;
    use tokio::net::UnixStream;

    #[test]
    fn encode_run_matches_the_enum() {
        for queued in [None, Some(1)] {
            let args = vec![Value::from(1), Value::from("x")];
            let mut a = Vec::new();
            encode_run(7, "u-1", "t.x", &args, 3, queued, &mut a).unwrap();
            let mut b = Vec::new();
            encode(
                &ToWorker::Run {
                    key: 7,
                    uuid: "u-1".into(),
                    task: "t.x".into(),
                    args,
                    attempt: 3,
                    queued,
                },
                &mut b,
            )
            .unwrap();
            assert_eq!(a, b);
            // Both decoders agree, and only a queued job says so.
            assert_eq!(a.windows(8).any(|w| w == b"\"queued\""), queued.is_some());
            let back: ToWorker = serde_json::from_slice(&a[4..]).unwrap();
            assert!(matches!(
                back,
                ToWorker::Run { key: 7, attempt: 3, queued: q, .. } if q == queued
            ));
            assert!(matches!(
                ToWorker::decode(&a[4..]).unwrap(),
                ToWorker::Run { key: 7, attempt: 3, queued: q, .. } if q == queued
            ));
        }
    }

    /// A `Run` frame from a pool that sends no attempt is a first run.
    #[test]
    fn run_without_attempt_is_a_first_run() {
        let back: ToWorker =
            serde_json::from_str(r#"{"t":"run","key":9,"uuid":"u-2","task":"t.x","args":[]}"#)
                .unwrap();
        assert!(matches!(
            back,
            ToWorker::Run {
                key: 9,
                attempt: 1,
                ..
            }
        ));
    }

    /// The frames decoded straight into their fields (tag first, as encoded) decode as the
    /// general path does with the tag elsewhere; a frame that does not fit its fields is
    /// refused on either path.
    #[test]
    fn run_and_done_decode_alike_with_the_tag_first_or_not() {
        let run_first = br#"{"t":"run","key":4,"uuid":"u","task":"t.x","args":[1,"a"]}"#;
        let run_later = br#"{"key":4,"uuid":"u","task":"t.x","t":"run","args":[1,"a"]}"#;
        for body in [&run_first[..], &run_later[..]] {
            match ToWorker::decode(body).unwrap() {
                ToWorker::Run {
                    key: 4,
                    uuid,
                    task,
                    args,
                    attempt: 1,
                    queued: None,
                } => {
                    assert_eq!((uuid.as_str(), task.as_str()), ("u", "t.x"));
                    assert_eq!(args, vec![Value::from(1), Value::from("a")]);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let done_first = br#"{"t":"done","key":9,"outcome":"error","error":"boom"}"#;
        let done_later = br#"{"key":9,"outcome":"error","t":"done","error":"boom"}"#;
        for body in [&done_first[..], &done_later[..]] {
            assert!(matches!(
                FromWorker::decode(body).unwrap(),
                FromWorker::Done { key: 9, outcome: Outcome::Error, result: None, error: Some(e), .. } if e == "boom"
            ));
        }
        let mut pong = Vec::new();
        encode(&FromWorker::Pong { n: 2 }, &mut pong).unwrap();
        assert!(matches!(
            FromWorker::decode(&pong[PREFIX..]),
            Ok(FromWorker::Pong { n: 2 })
        ));
        for bad in [
            &br#"{"t":"done","key":"x","outcome":"ok"}"#[..],
            br#"{"t":"done","key":1}"#,
            br#"{"t":"done","key":1,"outcome":"ok""#,
        ] {
            assert!(matches!(FromWorker::decode(bad), Err(Error::Decode(_))));
        }
        assert!(matches!(
            ToWorker::decode(br#"{"t":"run","key":1,"uuid":"u"}"#),
            Err(Error::Decode(_))
        ));
    }

    /// The three readers share the decoder: they read the same frame, and refuse the same sizes
    /// and the same bodies.
    #[tokio::test]
    async fn every_reader_reads_alike_and_refuses_alike() {
        let mut good = Vec::new();
        encode(&FromWorker::Pong { n: 5 }, &mut good).unwrap();
        let over = ((MAX_FRAME as u32) + 1).to_le_bytes().to_vec();
        let mut bad = 3u32.to_le_bytes().to_vec();
        bad.extend_from_slice(b"{{{");
        let too_large = |r: &Result<FromWorker>| matches!(r, Err(Error::FrameTooLarge(n)) if *n == MAX_FRAME + 1);
        let undecodable = |r: &Result<FromWorker>| matches!(r, Err(Error::Decode(_)));

        // The worker's blocking reader.
        let blocking = |bytes: &[u8]| {
            let mut buf = Vec::new();
            read_blocking::<FromWorker>(&mut &bytes[..], &mut buf)
                .and_then(|f| f.ok_or(Error::Environment("end of stream".into())))
        };
        assert!(matches!(blocking(&good), Ok(FromWorker::Pong { n: 5 })));
        assert!(too_large(&blocking(&over)));
        assert!(undecodable(&blocking(&bad)));

        // The handshake's async reader.
        assert!(matches!(
            read_frame::<FromWorker>(&mut &good[..]).await,
            Ok(FromWorker::Pong { n: 5 })
        ));
        assert!(too_large(&read_frame(&mut &over[..]).await));
        assert!(undecodable(&read_frame(&mut &bad[..]).await));

        // The service task's buffered reader.
        let buffered = |bytes: Vec<u8>| async move {
            let mut frames = FrameReader::new(&bytes[..]);
            std::future::poll_fn(|cx| frames.poll_frame::<FromWorker>(cx))
                .await
                .and_then(|f| f.ok_or(Error::Environment("end of stream".into())))
        };
        assert!(matches!(
            buffered(good.clone()).await,
            Ok(FromWorker::Pong { n: 5 })
        ));
        assert!(too_large(&buffered(over.clone()).await));
        assert!(undecodable(&buffered(bad.clone()).await));
    }

    #[tokio::test]
    async fn frame_reader_takes_frames_of_any_size_in_any_pieces() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut bytes = Vec::new();
        let large = "x".repeat(3 * READ_BUFFER);
        for i in 0..3u64 {
            encode(&FromWorker::Pong { n: i }, &mut bytes).unwrap();
        }
        encode(
            &FromWorker::Done {
                key: 9,
                outcome: Outcome::Ok,
                result: Some(Value::from(large.clone())),
                error: None,
                started: None,
                ended: Some(1.5),
            },
            &mut bytes,
        )
        .unwrap();
        encode(&FromWorker::Pong { n: 3 }, &mut bytes).unwrap();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut a = a;
            // Odd pieces, so frames and length prefixes are cut anywhere.
            for piece in bytes.chunks(7_777) {
                a.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut frames = FrameReader::new(crate::link::socket(b).unwrap());
        let mut got: Vec<FromWorker> = Vec::new();
        while let Some(f) = std::future::poll_fn(|cx| frames.poll_frame(cx))
            .await
            .unwrap()
        {
            got.push(f);
        }
        writer.await.unwrap();
        assert_eq!(got.len(), 5);
        assert!(matches!(got[2], FromWorker::Pong { n: 2 }));
        match &got[3] {
            FromWorker::Done {
                key: 9,
                result: Some(v),
                ..
            } => {
                assert_eq!(v.as_str().map(str::len), Some(large.len()))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(got[4], FromWorker::Pong { n: 3 }));
        assert_eq!(frames.buf.len(), READ_BUFFER, "the buffer shrinks back");
    }

    #[tokio::test]
    async fn frame_reader_rejects_an_oversized_prefix() {
        let (a, b) = UnixStream::pair().unwrap();
        {
            use tokio::io::AsyncWriteExt;
            let mut a = a;
            a.write_all(&((MAX_FRAME as u32) + 1).to_le_bytes())
                .await
                .unwrap();
        }
        let mut frames = FrameReader::new(crate::link::socket(b).unwrap());
        let r = std::future::poll_fn(|cx| frames.poll_frame::<FromWorker>(cx)).await;
        assert!(matches!(r, Err(Error::FrameTooLarge(_))), "{r:?}");
    }
}
