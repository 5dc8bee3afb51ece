//! Time helpers shared by the crates that build on the contract.

/// Sleeps until `at`, or forever when there is no deadline: the shape a `tokio::select!` branch
/// over an optional deadline needs.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::{Duration, Instant};
/// use dispatcher_core::time::sleep_until;
///
/// let soon = Instant::now() + Duration::from_millis(5);
/// sleep_until(Some(soon)).await;
/// assert!(Instant::now() >= soon);
/// tokio::select! {
///     _ = sleep_until(None::<Instant>) => unreachable!("no deadline never comes"),
///     _ = tokio::time::sleep(Duration::from_millis(5)) => {}
/// }
/// # }
/// ```
pub async fn sleep_until<I: Into<tokio::time::Instant>>(at: Option<I>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
