//! The complete example configuration.

/// A complete example, the one the README shows (every key with its default or an example).
pub const EXAMPLE: &str = r#"# Name of this service in replies and Calls (default: <hostname>-<pid>).
node_id = "worker-1"
# Channels to listen on.
channels = ["dispatcher"]
# Finished Calls kept for the `history` command.
history_size = 10000
# Most bytes the history holds (arguments, results and errors as JSON); the oldest Calls are
# dropped to stay under it. A field longer than 1 MiB is kept cut, ending in
# "…[truncated by the history: N bytes]".
history_max_bytes = 67108864
# Most Calls waiting at once (delayed + blocked + queued); more are rejected.
max_waiting = 100000
# While this many Calls wait for a worker, the service stops reading from PostgreSQL (messages
# wait in PostgreSQL's queue), so a flood costs bounded memory.
intake_pause_at = 1000
# Once this many Calls have finished since the last time and a second passes without one, the
# memory malloc holds free after the burst goes back to the system (glibc); 0: never.
release_memory_after = 10000
# Seconds running Calls may finish at shutdown before they are ended.
shutdown_grace = 30.0
# Log level: trace, debug, info, warn, error, off (Python's DEBUG ... CRITICAL and 10-50 too),
# for this service's own crates; dependencies stay at info unless named, as in
# "debug,tokio_postgres=debug". The set_log_level command changes it; RUST_LOG overrides it.
log_level = "info"
# Log lines as "text" or "json" (one JSON object per line).
log_format = "text"

[broker]
# PostgreSQL connection URL or key=value string. DATABASE_URL, when set, takes precedence.
url = "postgres://postgres@127.0.0.1:5432/postgres"
# Connections used to publish (replies, batches).
publish_connections = 1
# Seconds between self-checks of the LISTEN connection, and the bound on each.
self_check_interval = 2.0
self_check_timeout = 3.0
# Seconds a whole connect may take (TCP, TLS, authentication, set-up); omit: the URL's
# connect_timeout, else 5. A server that accepts but never answers fails start-up after this.
# connect_timeout = 5.0
# Seconds every call on an open connection may take (publish, control reply, LISTEN); a
# connection that misses it is replaced.
call_timeout = 5.0

[pool]
# Worker processes: at least min_workers, up to max_workers under queue pressure.
min_workers = 4
max_workers = 4
# Replace a worker after this many Calls or this many seconds (omit: never).
max_tasks_per_worker = 10000
max_worker_age = 3600.0
# Seconds an extra idle worker waits before it is stopped.
scale_down_after = 30.0
# Seconds between SIGTERM and SIGKILL when a worker is ended.
kill_grace = 1.0
# Seconds between health pings of idle workers, and the bound on each.
health_interval = 5.0
health_timeout = 2.0
# A worker whose resident memory passes this many MB while running a Call is ended (the Call is
# worker_lost); omit for no limit.
max_worker_memory_mb = 512
# Most processes a worker and what its task starts may have at once; omit for no limit.
max_worker_processes = 64
# The workers' scheduling policy: "batch" (Linux SCHED_BATCH: a worker woken for a job does not
# preempt the service, which then dispatches without a trip through the scheduler) or "normal".
worker_scheduling = "batch"

[limits]
# Largest payload, also after reassembly of chunks, in bytes.
max_payload_bytes = 16777216
# Chunked payloads being assembled at once, the bytes they may hold, and their expiry in seconds.
max_partial_messages = 1024
max_partial_bytes = 67108864
partial_expiry = 60.0
# Longest delay a message may ask for, in seconds.
max_delay = 86400.0

[security]
# Require HMAC-SHA256 signatures on task and control messages (and sign replies). The secret is
# read from this file (or from DISPATCHER_SIGNING_SECRET); it never goes in this file itself.
signing_secret_file = "/etc/dispatcher/signing.key"
# Seconds a signature stays valid (bounds replays).
signature_max_age = 300.0

[metrics]
# Serve Prometheus metrics on http://<address>/metrics (omit the section: no endpoint).
address = "127.0.0.1:9187"

[dashboard]
# Serve the live web dashboard on http://<address>/ (omit the section: none). It shows every
# service answering on the channels above, and the durable queue's jobs when [queue] is enabled.
address = "127.0.0.1:9180"
# Enables actions (cancel a Call, retry or discard a failed job) for whoever signs in with the
# token read from this file (or from DISPATCHER_DASHBOARD_TOKEN; 16 characters at least). Without
# one the dashboard is read-only.
token_file = "/etc/dispatcher/dashboard.token"

[queue]
# Also consume the durable queue (jobs kept in tables until they ran; at-least-once) of the
# channels above, in the same database. Control commands keep travelling as NOTIFY.
enabled = true
# Schema of the queue's tables and functions.
schema = "dispatcher"
# Apply missing migrations on start (safe with several services starting at once).
migrate_on_start = true
# Seconds a service's claims stay its own without renewal; a killed service's jobs run elsewhere
# after about this long.
lease = 30.0
# Seconds between looks for jobs when no wake-up arrives (and for expired leases).
poll_interval = 1.0
# Most jobs held beyond the workers.
max_prefetch = 1000
# Days failed and canceled jobs are kept.
failed_retention_days = 7.0
"#;
