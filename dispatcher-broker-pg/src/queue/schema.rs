//! The queue's schema: versioned migrations embedded in the binary, applied under an advisory
//! lock so that several services starting at once apply each one exactly once.

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::quote_ident;

/// One migration: its version, a name, and its SQL (with `__SCHEMA__` and `__WAKE__` to fill).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub(crate) version: i32,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// Every migration, oldest first.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "queue",
    sql: include_str!("migrations/0001_queue.sql"),
}];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 1;

/// A checked schema name: lowercase letters, digits and `_`, starting with a letter or `_`, at
/// most 50 bytes (the wake-up channel adds a suffix within PostgreSQL's 63).
pub(crate) fn check_schema(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 50
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(Error::Schema {
            name: name.to_owned(),
        })
    }
}

/// The channel the queue NOTIFYs (payload: the queue name) when jobs are added.
pub(crate) fn wake_channel(schema: &str) -> String {
    format!("{schema}_queue")
}

/// Fills a migration's placeholders.
pub(crate) fn render(sql: &str, schema: &str) -> String {
    let wake = wake_channel(schema).replace('\'', "''");
    sql.replace("__SCHEMA__", &quote_ident(schema))
        .replace("__WAKE__", &format!("'{wake}'"))
}

/// What [`migrate`](super::migrate) did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Migrated {
    /// The schema.
    pub schema: String,
    /// Versions applied by this call (empty when the schema was up to date).
    pub applied: Vec<i32>,
    /// The schema's version now.
    pub version: i32,
}

/// Brings `schema` up to [`SCHEMA_VERSION`]: creates it and applies every missing migration,
/// each in its own transaction, under a transaction-level advisory lock (concurrent callers
/// wait, then find nothing left to do). Fails when the database's schema is newer than this
/// build knows.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<Migrated> {
    check_schema(schema)?;
    let q = quote_ident(schema);
    let query = |what: &str| {
        let what = what.to_owned();
        move |source| Error::Query { what, source }
    };
    let mut applied = Vec::new();
    let mut version = 0;
    for m in MIGRATIONS {
        let tx = client
            .transaction()
            .await
            .map_err(query("begin a migration"))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('dispatcher.migrate'), hashtext($1))",
            &[&schema],
        )
        .await
        .map_err(query("take the migration lock"))?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {q};
             CREATE TABLE IF NOT EXISTS {q}.migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );"
        ))
        .await
        .map_err(query("create the migrations table"))?;
        let newest: Option<i32> = tx
            .query_one(&format!("SELECT max(version) FROM {q}.migrations"), &[])
            .await
            .map_err(query("read the schema version"))?
            .get(0);
        let newest = newest.unwrap_or(0);
        if newest > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                schema: schema.to_owned(),
                found: newest,
                known: SCHEMA_VERSION,
            });
        }
        version = newest;
        if newest >= m.version {
            tx.commit().await.map_err(query("end a migration"))?;
            continue;
        }
        tx.batch_execute(&render(m.sql, schema))
            .await
            .map_err(|source| Error::Migration {
                version: m.version,
                name: m.name,
                source,
            })?;
        tx.execute(
            &format!("INSERT INTO {q}.migrations (version, name) VALUES ($1, $2)"),
            &[&m.version, &m.name],
        )
        .await
        .map_err(query("record a migration"))?;
        tx.commit().await.map_err(query("commit a migration"))?;
        tracing::info!(
            schema,
            version = m.version,
            name = m.name,
            "migration applied"
        );
        applied.push(m.version);
        version = m.version;
    }
    Ok(Migrated {
        schema: schema.to_owned(),
        applied,
        version,
    })
}

/// The schema's version (0 when it has none).
pub(crate) async fn version(client: &Client, schema: &str) -> Result<i32> {
    check_schema(schema)?;
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{}.migrations", quote_ident(schema))],
        )
        .await
        .map_err(|source| Error::Query {
            what: "look for the migrations table".into(),
            source,
        })?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = client
        .query_one(
            &format!(
                "SELECT max(version) FROM {}.migrations",
                quote_ident(schema)
            ),
            &[],
        )
        .await
        .map_err(|source| Error::Query {
            what: "read the schema version".into(),
            source,
        })?
        .get(0);
    Ok(v.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for ok in ["dispatcher", "_q", "jobs_2"] {
            assert!(check_schema(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Jobs", "2jobs", "a-b", "a\"b", &"x".repeat(51)] {
            let e = check_schema(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn rendering_fills_every_placeholder() {
        let sql = render(MIGRATIONS[0].sql, "dq");
        assert!(!sql.contains("__SCHEMA__") && !sql.contains("__WAKE__"));
        assert!(sql.contains("CREATE TABLE \"dq\".jobs"));
        assert!(sql.contains("pg_notify('dq_queue'"));
    }
}
