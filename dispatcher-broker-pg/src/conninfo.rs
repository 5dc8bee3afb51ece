//! Connection settings as every libpq tool reads them: the connection string first, then the
//! `PG*` environment variables and the password file for what it leaves unset.
//!
//! [`config_from_env`] is what [`crate::PgBrokerConfig::from_url`] (and so every binary of the
//! workspace) uses; [`config_with_env`] takes the environment as a value, for tests and for
//! programs that hold their own.
//!
//! | setting | connection string | then |
//! |---|---|---|
//! | host(s) | `host=` / URL host | `PGHOST` (comma-separated; a path is a Unix socket directory), else the Unix socket in `/var/run/postgresql` or `/tmp` when one exists, else `localhost` |
//! | port(s) | `port=` / URL port | `PGPORT`, else 5432 |
//! | user | `user=` / URL user | `PGUSER`, else `USER` / `LOGNAME` |
//! | password | `password=` / URL password | `PGPASSWORD`, else the password file |
//! | database | `dbname=` / URL path | `PGDATABASE` (else the server uses the user's name) |
//! | application name | `application_name=` | `PGAPPNAME` |
//! | connect timeout | `connect_timeout=` | `PGCONNECT_TIMEOUT` (seconds; at least 2; 0 or less: not set) |
//!
//! The password file is `PGPASSFILE`, else `~/.pgpass`: lines of
//! `hostname:port:database:username:password`, `*` matching anything in the first four fields,
//! `\:` and `\\` standing for `:` and `\`, `#` starting a comment; the first line that matches
//! wins. As libpq does, a file readable or writable by group or others (mode above 0600) is
//! ignored, with a warning. A Unix-socket connection matches the host name `localhost`.
//!
//! An empty string means "everything from the environment". A URL whose scheme is not
//! `postgres` or `postgresql` (`mysql://…`) is refused with an error naming the scheme.
//!
//! ```
//! use dispatcher_broker_pg::conninfo::{config_with_env, PgEnv};
//!
//! let env = PgEnv::from_map([("PGHOST", "db.internal"), ("PGUSER", "app"), ("PGDATABASE", "jobs")]);
//! // The string sets the database; the environment fills in host and user.
//! let config = config_with_env("dbname=other", &env).unwrap();
//! assert_eq!(config.get_dbname(), Some("other"));
//! assert_eq!(config.get_user(), Some("app"));
//! assert!(matches!(&config.get_hosts()[0], tokio_postgres::config::Host::Tcp(h) if h == "db.internal"));
//!
//! let err = config_with_env("mysql://root:pw@db/app", &env).unwrap_err().to_string();
//! assert!(err.contains("`mysql`") && !err.contains("pw@"), "{err}");
//! ```

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::Config;

use crate::error::{Error, Result};
use crate::redact_connection_string;

/// The environment variables libpq reads that this module honours (and `HOME`, `USER`, `LOGNAME`).
pub const VARIABLES: [&str; 8] = [
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGAPPNAME",
    "PGCONNECT_TIMEOUT",
    "PGPASSFILE",
];

/// The URL schemes PostgreSQL connection strings use.
const SCHEMES: [&str; 2] = ["postgres", "postgresql"];

/// The environment connection settings are completed from: variables by name.
#[derive(Clone, Default)]
pub struct PgEnv {
    vars: HashMap<String, String>,
}

impl std::fmt::Debug for PgEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values may be passwords.
        let mut names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("PgEnv").field("set", &names).finish()
    }
}

impl PgEnv {
    /// This process's environment (the variables in [`VARIABLES`], `HOME`, `USER`, `LOGNAME`).
    pub fn from_process() -> Self {
        let names = VARIABLES.iter().chain(&["HOME", "USER", "LOGNAME"]);
        PgEnv {
            vars: names
                .filter_map(|n| std::env::var(n).ok().map(|v| ((*n).to_owned(), v)))
                .collect(),
        }
    }

    /// An environment given as name/value pairs.
    pub fn from_map<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        PgEnv {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// A variable's value; an empty one counts as unset.
    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Connection settings from `conn` (a URL, `key=value` settings, or empty), completed from this
/// process's environment and password file (see the [module docs](self)).
pub fn config_from_env(conn: &str) -> Result<Config> {
    config_with_env(conn, &PgEnv::from_process())
}

/// Connection settings from `conn`, completed from `env` and the password file it names (see
/// the [module docs](self)). Errors name the string with its passwords hidden.
pub fn config_with_env(conn: &str, env: &PgEnv) -> Result<Config> {
    let conn = conn.trim();
    check_scheme(conn)?;
    let bad = |reason: String| Error::Settings {
        url: redact_connection_string(conn),
        reason,
    };
    let env_ports = match env.get("PGPORT") {
        Some(ports) => ports
            .split(',')
            .map(|p| {
                p.trim().parse::<u16>().map_err(|_| {
                    bad(format!(
                        "PGPORT {p:?} is not a port number (1-65535); fix or unset PGPORT"
                    ))
                })
            })
            .collect::<Result<Vec<u16>>>()?,
        None => Vec::new(),
    };
    // A URL's host without a port reads as port 5432: give it PGPORT's instead.
    let with_port = url_with_ports(conn, &env_ports);
    let text = with_port.as_deref().unwrap_or(conn);
    let mut config = if text.is_empty() {
        Config::new()
    } else {
        text.parse::<Config>().map_err(|source| Error::Config {
            url: redact_connection_string(conn),
            source,
        })?
    };
    if config.get_hosts().is_empty() {
        match env.get("PGHOST") {
            Some(hosts) => {
                for h in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                    config.host(h);
                }
            }
            None => {
                config.host(default_host(env.get("PGPORT")));
            }
        }
    }
    if config.get_ports().is_empty() {
        for port in &env_ports {
            config.port(*port);
        }
    }
    if config.get_user().is_none() {
        if let Some(user) = ["PGUSER", "USER", "LOGNAME"]
            .iter()
            .find_map(|n| env.get(n))
        {
            config.user(user);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env.get("PGDATABASE") {
            config.dbname(db);
        }
    }
    if config.get_application_name().is_none() {
        if let Some(app) = env.get("PGAPPNAME") {
            config.application_name(app);
        }
    }
    if config.get_connect_timeout().is_none() {
        if let Some(t) = env.get("PGCONNECT_TIMEOUT") {
            let secs = t.trim().parse::<i64>().map_err(|_| {
                bad(format!(
                    "PGCONNECT_TIMEOUT {t:?} is not a whole number of seconds; fix or unset it"
                ))
            })?;
            if secs > 0 {
                config.connect_timeout(Duration::from_secs(secs.max(2).unsigned_abs()));
            }
        }
    }
    if config.get_password().is_none() {
        if let Some(pw) = env.get("PGPASSWORD") {
            config.password(pw);
        } else if let Some(pw) = password_from_file(&config, env) {
            config.password(pw);
        }
    }
    Ok(config)
}

/// Refuses a URL whose scheme is not PostgreSQL's, naming the scheme and the accepted forms.
pub fn check_scheme(conn: &str) -> Result<()> {
    let Some(end) = conn.find("://") else {
        return Ok(());
    };
    let scheme = &conn[..end];
    let looks_like_scheme = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !looks_like_scheme || SCHEMES.contains(&scheme) {
        return Ok(());
    }
    Err(Error::Settings {
        url: redact_connection_string(conn),
        reason: format!(
            "the scheme `{scheme}` is not PostgreSQL's: use a URL starting `postgres://` or \
             `postgresql://` (postgres://user:password@host:5432/database), key=value settings \
             (host=… port=… user=… dbname=…), or nothing and the PG* environment variables"
        ),
    })
}

/// `conn` with `ports` written into its hosts, when it is a URL naming hosts without any port
/// (neither after a host nor as `port=`); `None` when it needs no change. One port goes to every
/// host; a list goes host by host (when the counts differ, the URL is left as it is).
fn url_with_ports(conn: &str, ports: &[u16]) -> Option<String> {
    if ports.is_empty() {
        return None;
    }
    let start = conn.find("://")? + 3;
    let rest = &conn[start..];
    let netloc_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host_start = rest[..netloc_end].rfind('@').map_or(0, |i| i + 1);
    let hosts = &rest[host_start..netloc_end];
    let query = rest[netloc_end..].split_once('?').map(|(_, q)| q);
    let port_in_query = query.is_some_and(|q| {
        q.split('&').any(|kv| {
            kv.split('=')
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case("port"))
        })
    });
    let has_port = |chunk: &str| match chunk.rfind(']') {
        Some(i) => chunk[i..].contains(':'),
        None => chunk.contains(':'),
    };
    if hosts.is_empty() || port_in_query || hosts.split(',').any(has_port) {
        return None;
    }
    let chunks: Vec<&str> = hosts.split(',').collect();
    let port_of = |i: usize| match ports {
        [one] => Some(*one),
        many if many.len() == chunks.len() => many.get(i).copied(),
        _ => None,
    };
    let mut new_hosts = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        new_hosts.push(format!("{chunk}:{}", port_of(i)?));
    }
    Some(format!(
        "{}{}{}",
        &conn[..start + host_start],
        new_hosts.join(","),
        &rest[netloc_end..]
    ))
}

/// libpq's default host: the Unix socket of the port in `/var/run/postgresql` or `/tmp` when
/// one exists, else `localhost`.
fn default_host(port: Option<&str>) -> String {
    let port = port
        .and_then(|p| p.split(',').next())
        .map(str::trim)
        .unwrap_or("5432");
    ["/var/run/postgresql", "/tmp"]
        .iter()
        .find(|dir| Path::new(dir).join(format!(".s.PGSQL.{port}")).exists())
        .map_or_else(|| "localhost".to_owned(), |d| (*d).to_owned())
}

/// The password for `config`'s first host, port, database and user from the password file, if
/// the file exists, is private (0600 or less) and has a matching line.
fn password_from_file(config: &Config, env: &PgEnv) -> Option<String> {
    let path = match env.get("PGPASSFILE") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env.get("HOME")?).join(".pgpass"),
    };
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            "password file has group or world access; permissions should be u=rw (0600) or less: ignored"
        );
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        _ => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default();
    let db = config.get_dbname().unwrap_or(user);
    pgpass_lookup(&text, &host, &port, db, user)
}

/// The password of the first line of a password file's `text` matching host, port, database
/// and user (`*` in a field matches anything; `\:` and `\\` are `:` and `\`; `#` lines are
/// comments).
///
/// ```
/// use dispatcher_broker_pg::conninfo::pgpass_lookup;
///
/// let file = "# comment\ndb:5432:app:alice:first\n*:*:*:alice:fallback\n";
/// assert_eq!(pgpass_lookup(file, "db", "5432", "app", "alice").as_deref(), Some("first"));
/// assert_eq!(pgpass_lookup(file, "other", "5433", "x", "alice").as_deref(), Some("fallback"));
/// assert_eq!(pgpass_lookup(file, "db", "5432", "app", "bob"), None);
/// ```
pub fn pgpass_lookup(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    let wanted = [host, port, db, user];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = split_pgpass_line(line);
            if fields.len() < 5 {
                return None;
            }
            let matches = fields[..4]
                .iter()
                .zip(wanted)
                .all(|((text, literal_star), want)| (text == "*" && !literal_star) || text == want);
            // The password is the rest of the line (a further unescaped `:` is part of it).
            matches.then(|| {
                fields[4..]
                    .iter()
                    .map(|(f, _)| f.as_str())
                    .collect::<Vec<_>>()
                    .join(":")
            })
        })
}

/// A password-file line split at unescaped `:`, each field unescaped, with whether it was
/// written `\*` (a literal star, not a wildcard).
fn split_pgpass_line(line: &str) -> Vec<(String, bool)> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut escaped_star = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    if next == '*' && field.is_empty() {
                        escaped_star = true;
                    }
                    field.push(next);
                }
            }
            ':' => {
                fields.push((std::mem::take(&mut field), escaped_star));
                escaped_star = false;
            }
            c => field.push(c),
        }
    }
    fields.push((field, escaped_star));
    fields
}

#[cfg(test)]
mod tests;
