//! The crate's one error type, and how it maps to the contract's [`BrokerError`].

use std::time::Duration;

use dispatcher_core::BrokerError;

/// Everything that can go wrong in `dispatcher-broker-pg`.
///
/// The [`dispatcher_core::Broker`] methods return it as a [`BrokerError`] (see its `From`):
///
/// * a connection that could not be made, broke or closed under the call (I/O errors, the
///   server shutting down, starting up or out of connection slots) →
///   [`BrokerError::Unavailable`];
/// * [`Error::ConnectTimeout`] → [`BrokerError::Timeout`] with the connect timeout, and
///   [`Error::CallTimeout`] and [`Error::StatementTimeout`] → [`BrokerError::Timeout`] with
///   their deadline (the connection that missed it is replaced);
/// * [`Error::Closed`] → [`BrokerError::Closed`];
/// * the rest (settings, authentication, an unknown database, a statement the server
///   rejected) → [`BrokerError::Other`].
///
/// Either way the message is this error's, connection strings with their passwords hidden.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection URL or configuration could not be parsed.
    #[error("invalid PostgreSQL connection settings {url:?}: {source}")]
    Config {
        /// The connection string, passwords hidden ([`crate::redact_connection_string`]).
        url: String,
        /// The parser's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Connection settings that are not PostgreSQL's (another URL scheme), or a `PG*`
    /// environment variable with a value libpq would not take.
    #[error("invalid PostgreSQL connection settings {url:?}: {reason}")]
    Settings {
        /// The connection string, passwords hidden ([`crate::redact_connection_string`]).
        url: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Connecting failed.
    #[error(
        "could not connect to PostgreSQL ({what}): {}",
        dispatcher_core::error_chain(source)
    )]
    Connect {
        /// Which connection.
        what: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Connecting (TCP, TLS, the startup and authentication exchange, and what the connection
    /// prepares) took longer than the connect timeout
    /// ([`PgBrokerConfig::connect_timeout`](crate::PgBrokerConfig::connect_timeout), 5 s unless
    /// the settings say otherwise): nothing answers there, or too slowly.
    #[error(
        "could not connect to PostgreSQL at {target} ({what}): timed out after {after:?} \
         without an answer (connect_timeout); check that a PostgreSQL server listens at that \
         address, or raise connect_timeout"
    )]
    ConnectTimeout {
        /// Which connection.
        what: &'static str,
        /// Where: the host(s) and port(s) of the settings (never the password).
        target: String,
        /// The connect timeout.
        after: Duration,
    },
    /// A round trip on one of the broker's connections (a publish, LISTEN, the self-check's
    /// NOTIFY) got no answer within its deadline
    /// ([`PgBrokerConfig::call_timeout`](crate::PgBrokerConfig::call_timeout)): a frozen
    /// server or backend, a lost network. The connection was replaced; the next call opens a
    /// fresh one. Whether a timed-out NOTIFY was sent is unknown.
    #[error(
        "PostgreSQL {what} got no answer within {after:?} (call_timeout); the connection was \
         replaced"
    )]
    CallTimeout {
        /// What was attempted, on which connection.
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// A statement failed.
    #[error("PostgreSQL {what} failed: {source}")]
    Query {
        /// What was attempted.
        what: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// LISTEN failed.
    #[error("PostgreSQL rejected {sql:?}: {reason}")]
    Listen {
        /// The statement.
        sql: String,
        /// The server's reason.
        reason: String,
    },
    /// The broker was closed.
    #[error("the PostgreSQL broker is closed")]
    Closed,

    /// A queue schema name that is not a plain lowercase identifier.
    #[error("invalid queue schema name {name:?}: use lowercase letters, digits and _, starting with a letter or _, at most 50 bytes")]
    Schema {
        /// The name given.
        name: String,
    },

    /// The database's queue schema is newer than this build.
    #[error("queue schema {schema:?} is at version {found}, newer than this build knows ({known}); upgrade the binary")]
    SchemaTooNew {
        /// The schema.
        schema: String,
        /// Its version.
        found: i32,
        /// The newest version this build knows.
        known: i32,
    },

    /// The queue schema is missing or older than this build needs.
    #[error("queue schema {schema:?} is at version {found}, this build needs {needed}: run `dispatcherctl migrate`, call PgQueue::migrate, or set migrate_on_start")]
    NotMigrated {
        /// The schema.
        schema: String,
        /// Its version (0: absent).
        found: i32,
        /// The version needed.
        needed: i32,
    },

    /// A migration failed; the transaction was rolled back.
    #[error("queue migration {version} ({name}) failed: {source}")]
    Migration {
        /// Its version.
        version: i32,
        /// Its name.
        name: &'static str,
        /// The server's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A job that cannot be enqueued as given.
    #[error("invalid job: {0}")]
    Job(String),

    /// A statement did not complete in time (a frozen server or backend); the connection is
    /// replaced.
    #[error("PostgreSQL {what} did not answer within {after:?}")]
    StatementTimeout {
        /// The statement.
        what: String,
        /// The bound.
        after: Duration,
    },
}

impl From<Error> for BrokerError {
    /// Sorts the error by what a caller can do about it (see [`Error`]); the message is kept.
    fn from(e: Error) -> Self {
        match e {
            Error::ConnectTimeout {
                what,
                target,
                after,
            } => BrokerError::Timeout(
                after,
                format!("a connection to PostgreSQL at {target} ({what}) (connect_timeout)"),
            ),
            Error::CallTimeout { what, after } => BrokerError::Timeout(
                after,
                format!("PostgreSQL {what} (call_timeout; the connection was replaced)"),
            ),
            Error::Closed => BrokerError::Closed,
            Error::StatementTimeout { what, after } => {
                BrokerError::Timeout(after, format!("PostgreSQL {what}"))
            }
            Error::Connect { ref source, .. } | Error::Query { ref source, .. }
                if connection_trouble(source) =>
            {
                BrokerError::unavailable(e)
            }
            e => BrokerError::other(e),
        }
    }
}

impl From<Error> for dispatcher_core::Error {
    /// As the [`BrokerError`] it maps to, in [`dispatcher_core::Error::Broker`].
    fn from(e: Error) -> Self {
        dispatcher_core::Error::Broker(e.into())
    }
}

/// Whether `e` means there is no working connection now, so that a retry on a new one may
/// succeed: the connection is closed, an I/O error (refused, reset, a TCP timeout, TLS) is in
/// its causes, or the server says it is shutting down, starting up or out of connection slots.
/// A server that answers and refuses (authentication, an unknown database, a bad statement) is
/// not such trouble.
pub(crate) fn connection_trouble(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // Class 08: connection exception; 57P01/02/03/05: admin shutdown, crash shutdown,
        // cannot connect now, idle session timeout; 53300: too many connections.
        return code.starts_with("08")
            || matches!(code, "57P01" | "57P02" | "57P03" | "57P05" | "53300");
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Whether a connect error is tokio-postgres's own connect timeout (not an error of the OS).
pub(crate) fn is_connect_timeout(e: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::TimedOut && io.raw_os_error().is_none();
        }
        cause = c.source();
    }
    false
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dispatcher_core::BrokerError;

    use super::Error;
    use crate::{PgBroker, PgBrokerConfig};

    #[test]
    fn a_connect_timeout_is_a_timeout_naming_its_bound() {
        let e = BrokerError::from(Error::ConnectTimeout {
            what: "publisher",
            target: "db.example:5432".into(),
            after: Duration::from_millis(1500),
        });
        assert!(
            matches!(&e, BrokerError::Timeout(d, _) if *d == Duration::from_millis(1500)),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "broker timed out after 1.5s waiting for a connection to PostgreSQL at \
             db.example:5432 (publisher) (connect_timeout)"
        );
    }

    #[test]
    fn a_call_timeout_is_a_timeout_naming_its_bound_and_call() {
        let e = BrokerError::from(Error::CallTimeout {
            what: "pg_notify on publishing connection 0 (backend pid 42)".into(),
            after: Duration::from_secs(5),
        });
        assert!(
            matches!(&e, BrokerError::Timeout(d, _) if *d == Duration::from_secs(5)),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "broker timed out after 5s waiting for PostgreSQL pg_notify on publishing connection \
             0 (backend pid 42) (call_timeout; the connection was replaced)"
        );
    }

    #[test]
    fn a_closed_broker_is_closed() {
        assert!(matches!(
            BrokerError::from(Error::Closed),
            BrokerError::Closed
        ));
        let e = dispatcher_core::Error::from(Error::Closed);
        assert!(
            matches!(e, dispatcher_core::Error::Broker(BrokerError::Closed)),
            "{e:?}"
        );
    }

    #[test]
    fn a_rejected_listen_is_other_and_keeps_its_message() {
        let e = BrokerError::from(Error::Listen {
            sql: "LISTEN \"x\";".into(),
            reason: "no".into(),
        });
        assert!(matches!(e, BrokerError::Other(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "broker error: PostgreSQL rejected \"LISTEN \\\"x\\\";\": no"
        );
    }

    #[test]
    fn settings_that_do_not_parse_are_other_without_their_password() {
        let url = "postgres://u:TOPSECRET@127.0.0.1:notaport/db";
        let e = match PgBrokerConfig::from_url(url) {
            Ok(_) => panic!("{url:?} parsed"),
            Err(e) => BrokerError::from(e),
        };
        assert!(matches!(e, BrokerError::Other(_)), "{e:?}");
        let message = e.to_string();
        assert!(
            message.contains("postgres://u:***@127.0.0.1:notaport/db"),
            "{message}"
        );
        assert!(!message.contains("SECRET"), "{message}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_unavailable() {
        // Nothing listens on port 1 of the loopback: the connect is refused at once.
        let e = match PgBroker::connect("postgres://u:TOPSECRET@127.0.0.1:1/db").await {
            Ok(_) => panic!("connected to port 1"),
            Err(e) => e,
        };
        assert!(matches!(e, Error::Connect { .. }), "{e:?}");
        let e = BrokerError::from(e);
        assert!(matches!(e, BrokerError::Unavailable(_)), "{e:?}");
        let message = e.to_string();
        assert!(
            message.starts_with("broker unavailable: could not connect to PostgreSQL (listener)"),
            "{message}"
        );
        assert!(!message.contains("SECRET"), "{message}");
    }

    #[test]
    fn settings_that_do_not_parse_are_named_without_their_password() {
        for (url, shown) in [
            (
                "postgres://u@127.0.0.1:notaport/db?password=TOPSECRET",
                "postgres://u@127.0.0.1:notaport/db?password=***",
            ),
            (
                "postgres://u:TOPSECRET@127.0.0.1:notaport/db",
                "postgres://u:***@127.0.0.1:notaport/db",
            ),
            (
                "host=h port=notaport password='TOP SECRET'",
                "host=h port=notaport password=***",
            ),
        ] {
            let message = match PgBrokerConfig::from_url(url) {
                Ok(_) => panic!("{url:?} parsed"),
                Err(e) => e.to_string(),
            };
            assert!(message.contains(shown), "{message}");
            assert!(message.contains("port"), "{message}");
            assert!(!message.contains("SECRET"), "{message}");
        }
    }
}
