//! [`TestService`]: a real [`dispatcher_runtime::Service`] running in-process on any
//! [`Broker`], with a publisher on the same broker and channel and helpers to wait for Calls.
//!
//! By default it runs on a fresh [`MemoryBroker`] (the runtime's in-process bus with the
//! testkit's fault injection), reachable with [`TestService::memory_broker`]:
//!
//! ```
//! use std::time::Duration;
//! use dispatcher_core::{task, Outcome, TaskRegistry};
//! use dispatcher_testkit::expect::{assert_history, call};
//! use dispatcher_testkit::TestService;
//!
//! #[task(name = "docs.shout")]
//! fn shout(text: String) -> String { text.to_uppercase() }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let svc = TestService::builder()
//!     .registry(TaskRegistry::new().register::<shout>())
//!     .start()
//!     .await?;
//! svc.publisher().publish(shout::call("hi".into())).await?;
//! svc.publish_raw("not a task message!").await;
//! let calls = svc.wait_for_calls(2, Duration::from_secs(5)).await?;
//! assert_history(&calls)
//!     .has(call().task("docs.shout").outcome(Outcome::Ok).result("HI".into()))
//!     .has(call().outcome(Outcome::Rejected).error_contains("not a bare task name"));
//!
//! // Faults only exist on the memory broker.
//! let bus = svc.memory_broker().expect("the default broker is a MemoryBroker");
//! bus.faults().drop_next(1);
//! svc.publisher().publish(shout::call("lost".into())).await?;
//! assert_eq!(bus.dropped_count(), 1);
//! svc.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The same test runs on PostgreSQL when the builder gets a broker with
//! [`TestServiceBuilder::broker`], here a `PgBroker` (crate `dispatcher-broker-pg`) on a fresh
//! database of the testkit's `PgFixture` (feature `postgres`); `publisher`, `publish_raw` and
//! `wait_for_calls` work the same, and [`TestService::memory_broker`] is `None`:
//!
#![cfg_attr(feature = "postgres", doc = "```no_run")]
#![cfg_attr(not(feature = "postgres"), doc = "```ignore")]
//! use std::sync::Arc;
//! use std::time::Duration;
//! use dispatcher_broker_pg::PgBroker;
//! use dispatcher_core::{task, Broker, Outcome, TaskRegistry};
//! use dispatcher_testkit::expect::{assert_history, call};
//! use dispatcher_testkit::postgres::PgFixture;
//! use dispatcher_testkit::TestService;
//!
//! #[task(name = "docs.shout")]
//! fn shout(text: String) -> String { text.to_uppercase() }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fx = PgFixture::new().await?; // a fresh database, dropped with `fx`
//! let pg: Arc<dyn Broker> = Arc::new(PgBroker::connect(&fx.url()).await?);
//! let svc = TestService::builder()
//!     .registry(TaskRegistry::new().register::<shout>())
//!     .broker(pg)
//!     .start()
//!     .await?;
//! svc.publisher().publish(shout::call("hi".into())).await?;
//! let calls = svc.wait_for_calls(1, Duration::from_secs(20)).await?;
//! assert_history(&calls).has(call().task("docs.shout").outcome(Outcome::Ok).result("HI".into()));
//! assert!(svc.memory_broker().is_none());
//! svc.shutdown().await;
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use dispatcher_core::broker::{self, validate_channel};
use dispatcher_core::{Broker, Call, CallFilter, Error, Pool, Publisher, Registry};
use dispatcher_runtime::{
    Error as RuntimeError, InProcessPool, Service, ServiceBuilder, ServiceHandle,
};

use crate::error::TestkitError;
use crate::expect::history_table;
use crate::memory::MemoryBroker;

/// The channel a [`TestService`] listens and publishes on unless told otherwise.
pub const DEFAULT_CHANNEL: &str = "dispatcher_test";

/// Worker threads of the default pool.
pub const DEFAULT_WORKERS: usize = 2;

/// The shutdown grace period of a [`TestService`] (the service's own default is 30 s): a stuck
/// task cannot hold a test for long.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

type Configure = Box<dyn FnOnce(ServiceBuilder) -> ServiceBuilder + Send>;

/// The broker a [`TestServiceBuilder`] was given.
enum BrokerChoice {
    Memory(MemoryBroker),
    Other(Arc<dyn Broker>),
}

impl fmt::Debug for BrokerChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerChoice::Memory(m) => m.fmt(f),
            BrokerChoice::Other(b) => f.debug_tuple("Broker").field(&b.status()).finish(),
        }
    }
}

/// Builds a [`TestService`]; get one with [`TestService::builder`].
#[must_use]
pub struct TestServiceBuilder {
    registry: Option<Arc<dyn Registry>>,
    pool: Option<Box<dyn Pool>>,
    broker: Option<BrokerChoice>,
    channel: String,
    configure: Vec<Configure>,
}

impl fmt::Debug for TestServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServiceBuilder")
            .field("has_registry", &self.registry.is_some())
            .field("has_pool", &self.pool.is_some())
            .field("broker", &self.broker)
            .field("channel", &self.channel)
            .field("configure", &self.configure.len())
            .finish()
    }
}

impl TestServiceBuilder {
    /// The tasks the service runs (required, here or through [`TestServiceBuilder::configure`]).
    pub fn registry(mut self, registry: impl Registry) -> Self {
        self.registry = Some(Arc::new(registry));
        self
    }

    /// The pool; default `InProcessPool::new(2)`.
    pub fn pool(mut self, pool: impl Pool) -> Self {
        self.pool = Some(Box::new(pool));
        self
    }

    /// The broker to listen and publish on, any implementation (e.g. a `PgBroker` on a
    /// `PgFixture` database); default a fresh [`MemoryBroker`]. Keep a clone of the `Arc` to
    /// publish or subscribe on it yourself. [`TestService::memory_broker`] is `None` for a
    /// broker given here, even a `MemoryBroker` behind the `Arc`: pass one with
    /// [`TestServiceBuilder::memory_broker`] to keep its faults at hand.
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(BrokerChoice::Other(broker));
        self
    }

    /// Runs on this [`MemoryBroker`] (instead of a fresh one); pass a clone of one you keep to
    /// inject faults or publish on it yourself. [`TestService::memory_broker`] returns it.
    pub fn memory_broker(mut self, broker: MemoryBroker) -> Self {
        self.broker = Some(BrokerChoice::Memory(broker));
        self
    }

    /// The channel the service listens on and [`TestService::publisher`] publishes to; default
    /// [`DEFAULT_CHANNEL`].
    pub fn channel(mut self, channel: &str) -> Self {
        channel.clone_into(&mut self.channel);
        self
    }

    /// Changes the underlying [`ServiceBuilder`] (history size, node id, on-start and scheduled
    /// tasks, ...).
    ///
    /// Closures run in the order given, after the harness applied the registry, pool, broker,
    /// channel and its shutdown grace ([`DEFAULT_SHUTDOWN_GRACE`]), so they can override any of
    /// it. Replacing the whole configuration with `ServiceBuilder::config` also replaces the
    /// channels: listen on the harness's channel again with `.channels([...])`, as
    /// [`TestService::publisher`] keeps publishing there.
    pub fn configure(
        mut self,
        f: impl FnOnce(ServiceBuilder) -> ServiceBuilder + Send + 'static,
    ) -> Self {
        self.configure.push(Box::new(f));
        self
    }

    /// Starts the service; it is subscribed to the broker when this returns.
    pub async fn start(self) -> Result<TestService, RuntimeError> {
        validate_channel(&self.channel)?;
        let (shared, memory): (Arc<dyn Broker>, _) = match self.broker {
            Some(BrokerChoice::Other(broker)) => (broker, None),
            Some(BrokerChoice::Memory(memory)) => (Arc::new(memory.clone()), Some(memory)),
            None => {
                let memory = MemoryBroker::new();
                (Arc::new(memory.clone()), Some(memory))
            }
        };
        let mut builder = Service::builder()
            .broker(shared.clone())
            .channels([self.channel.clone()])
            .node_id(format!(
                "testservice-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ))
            .shutdown_grace(DEFAULT_SHUTDOWN_GRACE);
        if let Some(registry) = self.registry {
            builder = builder.shared_registry(registry);
        }
        builder = match self.pool {
            Some(pool) => builder.pool(pool),
            None => builder.pool(InProcessPool::new(DEFAULT_WORKERS)),
        };
        for f in self.configure {
            builder = f(builder);
        }
        let publisher = Publisher::new(shared.clone(), self.channel.clone())?;
        let handle = builder.start().await?;
        tracing::debug!(node = %handle.node_id(), channel = %self.channel, "test service started");
        Ok(TestService {
            handle,
            broker: shared,
            memory,
            publisher,
            channel: self.channel,
        })
    }
}

/// A real service running in-process on a broker (by default a fresh [`MemoryBroker`]); see the
/// [module docs](self).
///
/// Dropping it without [`TestService::shutdown`] leaves the service running until the tokio
/// runtime ends.
pub struct TestService {
    handle: ServiceHandle,
    broker: Arc<dyn Broker>,
    memory: Option<MemoryBroker>,
    publisher: Publisher,
    channel: String,
}

impl fmt::Debug for TestService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestService")
            .field("handle", &self.handle)
            .field("broker", &self.broker.status())
            .field("publisher", &self.publisher)
            .field("channel", &self.channel)
            .finish()
    }
}

impl TestService {
    /// A builder with the defaults: a fresh [`MemoryBroker`], `InProcessPool::new(2)`, channel
    /// [`DEFAULT_CHANNEL`].
    pub fn builder() -> TestServiceBuilder {
        TestServiceBuilder {
            registry: None,
            pool: None,
            broker: None,
            channel: DEFAULT_CHANNEL.to_owned(),
            configure: Vec::new(),
        }
    }

    /// A publisher on the service's broker and channel (without hooks; add some with
    /// [`Publisher::with_hook`]).
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// The broker the service listens on (and [`TestService::publisher`] publishes to). Clone
    /// the `Arc` to publish or subscribe on it yourself.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// The [`MemoryBroker`] the service runs on, for its faults and counters; `None` when the
    /// builder got another broker through [`TestServiceBuilder::broker`].
    pub fn memory_broker(&self) -> Option<&MemoryBroker> {
        self.memory.as_ref()
    }

    /// The running service.
    pub fn handle(&self) -> &ServiceHandle {
        &self.handle
    }

    /// The channel the service listens on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Publishes `payload` as it is on the service's channel (split into chunks when too large),
    /// for tests of malformed input.
    ///
    /// # Panics
    ///
    /// When the broker refuses it (e.g. after [`crate::Faults::disconnect`]); use
    /// [`TestService::try_publish_raw`] to get the error instead.
    pub async fn publish_raw(&self, payload: &str) {
        if let Err(e) = self.try_publish_raw(payload).await {
            panic!(
                "TestService::publish_raw on channel {:?} failed: {e}",
                self.channel
            );
        }
    }

    /// Like [`TestService::publish_raw`], returning the broker's error.
    pub async fn try_publish_raw(&self, payload: &str) -> Result<(), Error> {
        broker::send(self.broker.as_ref(), &self.channel, payload).await
    }

    /// Waits until at least `n` Calls have finished (any outcome, counted since start), then
    /// returns the whole history, oldest first (it holds fewer than `n` when the configured
    /// history size is smaller). On timeout the error shows the history so far.
    pub async fn wait_for_calls(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Call>, TestkitError> {
        let wanted = u64::try_from(n).unwrap_or(u64::MAX);
        match self.handle.wait_for_finished(wanted, timeout).await {
            Ok(()) => Ok(self.history()),
            Err(RuntimeError::Timeout(..)) => Err(TestkitError::Timeout {
                waited: timeout,
                wanted: n,
                finished: self.handle.finished_count(),
                history: history_table(&self.history()),
            }),
            Err(RuntimeError::ServiceStopped) => Err(TestkitError::ServiceStopped {
                wanted: n,
                finished: self.handle.finished_count(),
                history: history_table(&self.history()),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The finished Calls the service keeps, oldest first.
    pub fn history(&self) -> Vec<Call> {
        self.handle.history(&CallFilter::default())
    }

    /// Stops the service (running Calls get [`DEFAULT_SHUTDOWN_GRACE`] unless configured
    /// otherwise) and waits for it. A failure to stop cleanly is logged, not returned.
    pub async fn shutdown(&self) {
        if let Err(e) = self.handle.shutdown().await {
            tracing::warn!(error = %e, "test service did not shut down cleanly");
        }
    }
}
