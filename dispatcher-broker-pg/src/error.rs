//! The crate's one error type.

/// Everything that can go wrong in `dispatcher-broker-pg`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection URL or configuration could not be parsed.
    #[error("invalid PostgreSQL connection settings {url:?}: {source}")]
    Config {
        /// The URL (password removed).
        url: String,
        /// The parser's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Connecting failed.
    #[error("could not connect to PostgreSQL ({what}): {source}")]
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

/// A connection URL with any password replaced, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("postgres://h/db"), "postgres://h/db");
    }
}
