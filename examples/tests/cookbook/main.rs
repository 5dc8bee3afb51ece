//! The cookbook recipes, each with two nodes (services) on one fresh database.
//!
//! * `exactly_once`: jobs submitted while no node runs and while two run are each run once; the
//!   claim SQL never hands a row to two claimers; NOTIFY wakes an idle node; the sweep finds rows
//!   inserted without a NOTIFY; expired leases (a dead node) are taken over, live ones are not;
//!   a node process killed with SIGKILL mid-job loses the job to another node process.
//! * `periodic`: two nodes run a 500 ms periodic task about six times in 3 s, never twice within
//!   an interval; concurrent checks have exactly one winner; another node takes over when the
//!   winner stops.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod colour;
mod exactly_once;
mod periodic;
mod support;
