use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::*;

fn env(vars: &[(&str, &str)]) -> PgEnv {
    PgEnv::from_map(vars.iter().copied())
}

fn tcp_hosts(c: &Config) -> Vec<String> {
    c.get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        })
        .collect()
}

/// A private directory holding a password file with `text` and `mode`.
fn pgpass(text: &str, mode: u32) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("conninfo-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join(".pgpass");
    std::fs::write(&file, text).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    (dir, file)
}

#[test]
fn the_environment_fills_what_the_string_leaves_unset() {
    let e = env(&[
        ("PGHOST", "envhost"),
        ("PGPORT", "6543"),
        ("PGUSER", "envuser"),
        ("PGPASSWORD", "envpw"),
        ("PGDATABASE", "envdb"),
        ("PGAPPNAME", "envapp"),
        ("PGCONNECT_TIMEOUT", "7"),
    ]);
    let c = config_with_env("", &e).unwrap();
    assert_eq!(tcp_hosts(&c), ["envhost"]);
    assert_eq!(c.get_ports(), [6543]);
    assert_eq!(c.get_user(), Some("envuser"));
    assert_eq!(c.get_password(), Some(&b"envpw"[..]));
    assert_eq!(c.get_dbname(), Some("envdb"));
    assert_eq!(c.get_application_name(), Some("envapp"));
    assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(7)));

    // Everything the string sets wins, in both forms.
    for conn in [
        "postgres://u:pw@h:1111/db?application_name=app&connect_timeout=3",
        "host=h port=1111 user=u password=pw dbname=db application_name=app connect_timeout=3",
    ] {
        let c = config_with_env(conn, &e).unwrap();
        assert_eq!(tcp_hosts(&c), ["h"], "{conn}");
        assert_eq!(c.get_ports(), [1111]);
        assert_eq!(c.get_user(), Some("u"));
        assert_eq!(c.get_password(), Some(&b"pw"[..]));
        assert_eq!(c.get_dbname(), Some("db"));
        assert_eq!(c.get_application_name(), Some("app"));
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
    }
    // A URL's host without a port takes PGPORT; one with a port keeps it.
    let c = config_with_env("postgres://u@h1,h2/db", &e).unwrap();
    assert_eq!(c.get_ports(), [6543, 6543]);
    let c = config_with_env("postgres://u@[::1]/db", &e).unwrap();
    assert_eq!(c.get_ports(), [6543]);
    let c = config_with_env("postgres://u@[::1]:7/db", &e).unwrap();
    assert_eq!(c.get_ports(), [7]);
    let c = config_with_env("postgres://u@h/db?port=8", &e).unwrap();
    assert!(c.get_ports().contains(&8) && !c.get_ports().contains(&6543));
    let c = config_with_env("postgres://u@h/db", &env(&[])).unwrap();
    assert_eq!(c.get_ports(), [5432]);
    // A partial string: the rest from the environment.
    let c = config_with_env("postgres://u@h/db", &e).unwrap();
    assert_eq!(c.get_ports(), [6543]);
    assert_eq!(c.get_password(), Some(&b"envpw"[..]));
    assert_eq!(c.get_application_name(), Some("envapp"));
}

#[test]
fn several_hosts_and_ports_unix_sockets_and_defaults() {
    let c = config_with_env("", &env(&[("PGHOST", "a, b"), ("PGPORT", "1,2")])).unwrap();
    assert_eq!(tcp_hosts(&c), ["a", "b"]);
    assert_eq!(c.get_ports(), [1, 2]);
    let c = config_with_env("", &env(&[("PGHOST", "/var/run/postgresql")])).unwrap();
    assert!(matches!(&c.get_hosts()[0], Host::Unix(p) if p == Path::new("/var/run/postgresql")));
    // No PGUSER: USER, then LOGNAME; empty values count as unset.
    let c = config_with_env("", &env(&[("PGUSER", ""), ("USER", "osuser")])).unwrap();
    assert_eq!(c.get_user(), Some("osuser"));
    let c = config_with_env("", &env(&[("LOGNAME", "logname")])).unwrap();
    assert_eq!(c.get_user(), Some("logname"));
    // No host anywhere: a host is still set (a socket directory or localhost).
    let c = config_with_env("", &env(&[])).unwrap();
    assert_eq!(c.get_hosts().len(), 1);
}

#[test]
fn connect_timeout_follows_libpq() {
    let t = |v: &str| {
        config_with_env("host=h", &env(&[("PGCONNECT_TIMEOUT", v)]))
            .unwrap()
            .get_connect_timeout()
            .copied()
    };
    assert_eq!(t("1"), Some(Duration::from_secs(2)));
    assert_eq!(t("30"), Some(Duration::from_secs(30)));
    assert_eq!(t("0"), None);
    assert_eq!(t("-5"), None);
}

#[test]
fn bad_environment_values_are_named_without_passwords() {
    let e = config_with_env(
        "postgres://u:TOPSECRET@h/db",
        &env(&[("PGPORT", "notaport")]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("PGPORT \"notaport\""), "{e}");
    assert!(e.contains("postgres://u:***@h/db"), "{e}");
    assert!(!e.contains("TOPSECRET"), "{e}");
    let e = config_with_env("host=h", &env(&[("PGCONNECT_TIMEOUT", "soon")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("PGCONNECT_TIMEOUT \"soon\""), "{e}");
}

#[test]
fn other_schemes_are_refused_by_name() {
    for (conn, scheme) in [
        ("mysql://root:TOPSECRET@db/app", "mysql"),
        ("http://db", "http"),
        ("Postgres://u@h/db", "Postgres"),
        ("jdbc:postgresql://h/db", "jdbc:postgresql"),
    ] {
        let e = config_with_env(conn, &env(&[])).unwrap_err().to_string();
        if scheme.contains(':') {
            // Not a scheme libpq would read either: the parser's own error.
            assert!(e.contains("invalid PostgreSQL connection settings"), "{e}");
            continue;
        }
        assert!(e.contains(&format!("the scheme `{scheme}`")), "{e}");
        assert!(e.contains("postgres://") && e.contains("key=value"), "{e}");
        assert!(!e.contains("TOPSECRET"), "{e}");
    }
    for conn in ["postgres://u@h/db", "postgresql://u@h/db", "host=h", ""] {
        config_with_env(conn, &env(&[])).unwrap();
    }
}

#[test]
fn pgpass_lines_match_with_wildcards_escapes_and_first_match() {
    let file = "\
# a comment
h\\:1:5432:db:u:escaped-host
h:5432:db:u:exact
h:5432:db:u:second
*:*:db:*:any-user-of-db
*:*:*:u:pw\\:with\\\\colon:and more
\\*:*:*:star:literal-star
";
    let l = |h, p, d, u| pgpass_lookup(file, h, p, d, u);
    assert_eq!(l("h:1", "5432", "db", "u").as_deref(), Some("escaped-host"));
    assert_eq!(l("h", "5432", "db", "u").as_deref(), Some("exact"));
    assert_eq!(
        l("x", "1", "db", "anyone").as_deref(),
        Some("any-user-of-db")
    );
    assert_eq!(
        l("x", "1", "other", "u").as_deref(),
        Some("pw:with\\colon:and more")
    );
    // `\*` is a literal star, not a wildcard.
    assert_eq!(l("x", "1", "other", "star"), None);
    assert_eq!(
        l("*", "1", "other", "star").as_deref(),
        Some("literal-star")
    );
    assert_eq!(l("x", "1", "other", "nobody"), None);
    // Short lines are skipped.
    assert_eq!(pgpass_lookup("h:5432:db\n", "h", "5432", "db", "u"), None);
}

#[test]
fn the_password_file_is_read_when_private_and_only_then() {
    let (dir, file) = pgpass("h:5432:db:u:from-file\nlocalhost:*:*:u:socket\n", 0o600);
    let file_s = file.display().to_string();
    let c = config_with_env("host=h user=u dbname=db", &env(&[("PGPASSFILE", &file_s)])).unwrap();
    assert_eq!(c.get_password(), Some(&b"from-file"[..]));
    // ~/.pgpass when PGPASSFILE is unset.
    let home = dir.display().to_string();
    let c = config_with_env("host=h user=u dbname=db", &env(&[("HOME", &home)])).unwrap();
    assert_eq!(c.get_password(), Some(&b"from-file"[..]));
    // A Unix socket matches `localhost`.
    let c = config_with_env(
        "host=/var/run/postgresql user=u dbname=x",
        &env(&[("HOME", &home)]),
    )
    .unwrap();
    assert_eq!(c.get_password(), Some(&b"socket"[..]));
    // The database defaults to the user's name for the lookup; the port to 5432.
    let c = config_with_env("host=h user=db", &env(&[("HOME", &home)])).unwrap();
    assert_eq!(c.get_password(), None);
    // PGPASSWORD and the string come first.
    let c = config_with_env(
        "host=h user=u dbname=db",
        &env(&[("HOME", &home), ("PGPASSWORD", "env")]),
    )
    .unwrap();
    assert_eq!(c.get_password(), Some(&b"env"[..]));
    let c = config_with_env(
        "host=h user=u dbname=db password=given",
        &env(&[("HOME", &home)]),
    )
    .unwrap();
    assert_eq!(c.get_password(), Some(&b"given"[..]));
    // Group- or world-readable: ignored, as libpq does.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let c = config_with_env("host=h user=u dbname=db", &env(&[("PGPASSFILE", &file_s)])).unwrap();
    assert_eq!(c.get_password(), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_environment_shows_names_not_values() {
    let shown = format!("{:?}", env(&[("PGPASSWORD", "TOPSECRET")]));
    assert!(
        shown.contains("PGPASSWORD") && !shown.contains("TOPSECRET"),
        "{shown}"
    );
}
