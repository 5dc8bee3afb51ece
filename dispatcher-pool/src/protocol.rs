//! The IPC protocol between the pool and a worker: length-prefixed JSON frames over a Unix
//! socket (never the worker's stdout/stderr, which task code may write to).
//!
//! A frame is a 4-byte little-endian length followed by that many bytes of JSON.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// Largest frame accepted, in bytes.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Environment variable naming the socket a worker connects to; its presence is the worker marker.
pub const ENV_SOCKET: &str = "DISPATCHER_WORKER_SOCKET";
/// Environment variable with the worker's id.
pub const ENV_WORKER_ID: &str = "DISPATCHER_WORKER_ID";
/// Environment variable with the token a worker presents when it connects.
pub const ENV_TOKEN: &str = "DISPATCHER_WORKER_TOKEN";

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
    },
    /// Answer with a pong.
    Ping {
        /// Echoed back.
        n: u64,
    },
    /// Finish and exit.
    Stop,
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
    buf.extend_from_slice(&[0u8; 4]);
    serde_json::to_writer(&mut *buf, msg).map_err(Error::Encode)?;
    let len = buf.len() - start - 4;
    if len > MAX_FRAME {
        buf.truncate(start);
        return Err(Error::FrameTooLarge(len));
    }
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Encodes a [`ToWorker::Run`] frame into `buf` from borrowed parts (the same bytes as encoding
/// the enum, without building it).
pub fn encode_run(
    key: u64,
    uuid: &str,
    task: &str,
    args: &[Value],
    buf: &mut Vec<u8>,
) -> Result<()> {
    #[derive(Serialize)]
    #[serde(tag = "t", rename = "run")]
    struct Run<'a> {
        key: u64,
        uuid: &'a str,
        task: &'a str,
        args: &'a [Value],
    }
    encode(
        &Run {
            key,
            uuid,
            task,
            args,
        },
        buf,
    )
}

/// Reads one frame body (blocking). `Ok(None)` at a clean end of stream.
pub fn read_frame_blocking(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<Option<()>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::Io(e)),
    }
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(Error::FrameTooLarge(n));
    }
    buf.clear();
    buf.resize(n, 0);
    r.read_exact(buf).map_err(Error::Io)?;
    Ok(Some(()))
}

/// Writes one frame (blocking).
pub fn write_frame_blocking<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<()> {
    let mut buf = Vec::with_capacity(256);
    encode(msg, &mut buf)?;
    w.write_all(&buf).map_err(Error::Io)?;
    w.flush().map_err(Error::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_run_matches_the_enum() {
        let args = vec![Value::from(1), Value::from("x")];
        let mut a = Vec::new();
        encode_run(7, "u-1", "t.x", &args, &mut a).unwrap();
        let mut b = Vec::new();
        encode(
            &ToWorker::Run {
                key: 7,
                uuid: "u-1".into(),
                task: "t.x".into(),
                args,
            },
            &mut b,
        )
        .unwrap();
        assert_eq!(a, b);
        let back: ToWorker = serde_json::from_slice(&a[4..]).unwrap();
        assert!(matches!(back, ToWorker::Run { key: 7, .. }));
    }
}
