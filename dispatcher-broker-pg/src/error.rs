//! The crate's one error type.

/// Everything that can go wrong in `dispatcher-broker-pg`.
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
    /// Connecting failed.
    #[error("could not connect to PostgreSQL ({what}): {}", chain(source))]
    Connect {
        /// Which connection.
        what: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
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
}

impl From<Error> for dispatcher_core::Error {
    fn from(e: Error) -> Self {
        dispatcher_core::Error::broker(e)
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes, joined: tokio-postgres keeps the useful part ("connection refused")
/// in the source.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use crate::PgBrokerConfig;

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
