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

/// A connection URL or `key=value` string with any password replaced, for messages.
pub(crate) fn redact(url: &str) -> String {
    if !url.contains("://") {
        // key=value form: hide the value of `password`, quoted or not.
        let mut out = String::new();
        let mut rest = url;
        while let Some(i) = rest.find("password") {
            let (before, after) = rest.split_at(i);
            out.push_str(before);
            let after_key = &after["password".len()..];
            let trimmed = after_key.trim_start();
            if let Some(v) = trimmed.strip_prefix('=') {
                out.push_str("password=***");
                let v = v.trim_start();
                let end = if let Some(q) = v.strip_prefix('\'') {
                    q.find('\'').map(|e| e + 2).unwrap_or(v.len())
                } else {
                    v.find(char::is_whitespace).unwrap_or(v.len())
                };
                rest = &v[end.min(v.len())..];
            } else {
                out.push_str("password");
                rest = after_key;
            }
        }
        out.push_str(rest);
        return out;
    }
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
        assert_eq!(
            super::redact("host=h password=secret user=u"),
            "host=h password=*** user=u"
        );
        assert_eq!(
            super::redact("host=h password = 'se cret' user=u"),
            "host=h password=*** user=u"
        );
    }
}
