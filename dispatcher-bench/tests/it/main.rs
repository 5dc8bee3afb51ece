//! The bench binary as users run it: each test runs `dispatcher-bench` and reads the JSON
//! report on the last line of its stdout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod floors;
