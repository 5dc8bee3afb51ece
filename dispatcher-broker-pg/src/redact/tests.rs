//! The redactor against a table of every form, truncations and arbitrary text.

use super::redact_connection_string as redact;

/// Inputs and what is shown of them.
const SHOWN: &[(&str, &str)] = &[
    // URLs
    (
        "postgres://u:secret@h:5432/db",
        "postgres://u:***@h:5432/db",
    ),
    ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
    ("POSTGRES://u:secret@h", "POSTGRES://u:***@h"),
    ("postgres://:secret@h/db", "postgres://:***@h/db"),
    (
        "postgresql://u:p@ss@h/db?sslmode=require&password=x",
        "postgresql://u:***@h/db?sslmode=require&password=***",
    ),
    ("postgres://u:pa/ss?w@h/db", "postgres://u:***@h/db"),
    ("postgres://u:top%20secret@h/db", "postgres://u:***@h/db"),
    (
        "postgres://u@h/db?password=secret",
        "postgres://u@h/db?password=***",
    ),
    (
        "postgres://u@h/db?sslmode=disable&password=top%20secret&application_name=x",
        "postgres://u@h/db?sslmode=disable&password=***&application_name=x",
    ),
    (
        "postgres://u@h/db?PassWord=secret",
        "postgres://u@h/db?PassWord=***",
    ),
    (
        "postgres://u@h/db?pass%77ord=secret",
        "postgres://u@h/db?pass%77ord=***",
    ),
    (
        "postgres://u@h/db?sslpassword=secret&sslmode=verify-full",
        "postgres://u@h/db?sslpassword=***&sslmode=verify-full",
    ),
    (
        "postgres://u:a@h/db?password=b",
        "postgres://u:***@h/db?password=***",
    ),
    // URLs without a password stay as they are
    ("postgres://h/db", "postgres://h/db"),
    ("postgres://u@h/db", "postgres://u@h/db"),
    ("postgres://[::1]:5432/db", "postgres://[::1]:5432/db"),
    (
        "postgres://h1:5432,h2:5433/db?target_session_attrs=read-write",
        "postgres://h1:5432,h2:5433/db?target_session_attrs=read-write",
    ),
    (
        "postgres://u@h/db?application_name=me@x&password",
        "postgres://u@h/db?application_name=me@x&password",
    ),
    (
        "postgresql:///db?host=/var/run/postgresql",
        "postgresql:///db?host=/var/run/postgresql",
    ),
    // key=value settings
    (
        "host=h user=u password=secret dbname=d",
        "host=h user=u password=*** dbname=d",
    ),
    (
        "host=h password = 'se cr\\'et' port=1",
        "host=h password=*** port=1",
    ),
    ("PASSWORD=secret host=h", "PASSWORD=*** host=h"),
    (
        "host=h sslpassword=secret sslmode=require",
        "host=h sslpassword=*** sslmode=require",
    ),
    // libpq reads `port=1` as the password here
    ("host=h password= port=1", "host=h password=***"),
    (
        "host=h password=sec\\ ret port=1",
        "host=h password=*** port=1",
    ),
    ("  host=h password=x  ", "host=h password=***"),
    // key=value settings without a password stay as they are
    (
        "host=127.0.0.1 port=1 user=postgres connect_timeout=2",
        "host=127.0.0.1 port=1 user=postgres connect_timeout=2",
    ),
    ("user=password dbname=x", "user=password dbname=x"),
    ("password_file=/x host=h", "password_file=/x host=h"),
    ("host=h password", "host=h password"),
    ("", ""),
    // malformed
    ("host=h password='unterminated", "host=h password=***"),
    ("host=h password 'secret'", "host=h password ***"),
    ("host=h password:secret", "host=h password ***"),
    ("password=\\", "password=***"),
    ("postgres://user:secret", "postgres://user:***"),
    ("postgres://user:secret/db", "postgres://user:***/db"),
    ("postgres://h:5432:x/db", "postgres://h:***/db"),
    ("postgres://", "postgres://"),
    ("postgres://@", "postgres://@"),
    ("postgres://:@", "postgres://:***@"),
    ("://u:p@h", "://u:p@h"),
    (
        "postgres://h/db?password=x@y",
        "postgres://h/db?password=***@y",
    ),
    ("host=a://b:c@d password=e", "host=a://b:c@d password=***"),
];

#[test]
fn every_form_is_redacted_and_the_rest_kept() {
    for (input, shown) in SHOWN {
        assert_eq!(redact(input), *shown, "input {input:?}");
    }
}

/// Strings holding the password `TOPSECRET` in every form, well formed or not.
const SECRETS: &[&str] = &[
    "postgres://user:TOPSECRET@127.0.0.1:5432/db",
    "postgresql://user:TOPSECRET@host/db?sslmode=require",
    "postgres://user:TOP@SECRET@host/db",
    "postgres://user:TOPSECRET/with/slashes@host/db",
    "postgres://postgres@127.0.0.1:notaport/db?password=TOPSECRET",
    "postgres://u@h/db?sslmode=require&PASSWORD=TOPSECRET&application_name=x",
    "postgres://u@h/db?Pass%57ord=TOPSECRET",
    "postgres://u@h/db?password=TOPSECRET%20and%20more",
    "postgres://h/db?password=TOPSECRET@elsewhere",
    "postgres://user:TOPSECRET",
    "postgres://[::1]:TOPSECRET/db",
    "host=127.0.0.1 user=postgres password=TOPSECRET dbname=x",
    "host=h password = 'TOPSECRET and more' port=1",
    "host=h password='TOP\\'SECRET' port=1",
    "host=h PassWord=TOPSECRET",
    "host=h password\u{3000}=\u{3000}TOPSECRET",
    "host=h password= TOPSECRET",
    "host=h password TOPSECRET",
    "host=h password 'TOPSECRET'",
    "host=h password'TOPSECRET'",
    "host=h sslpassword=TOPSECRET",
    "é=é password=TOPSECRETé",
    "host=a://b password=TOPSECRET",
];

#[test]
fn the_password_never_shows_in_any_form_nor_in_any_truncation() {
    for input in SECRETS {
        let shown = redact(input);
        assert!(
            !shown.contains("TOPSECRET") && !shown.contains("SECRET"),
            "{input:?} shown as {shown:?}"
        );
        // Cut anywhere after the secret is complete: still hidden.
        for (cut, _) in input.char_indices().chain([(input.len(), ' ')]) {
            let prefix = &input[..cut];
            if prefix.contains("TOPSECRET") {
                let shown = redact(prefix);
                assert!(
                    !shown.contains("TOPSECRET"),
                    "{prefix:?} shown as {shown:?}"
                );
            }
        }
    }
}

#[test]
fn arbitrary_text_never_panics() {
    const PIECES: &[&str] = &[
        "postgres://",
        "password",
        "PASSWORD",
        "=",
        " ",
        "'",
        "\\",
        ":",
        "@",
        "/",
        "?",
        "&",
        "%",
        "%7",
        "%77",
        "[",
        "]",
        ",",
        "é",
        "\u{3000}",
        "x",
        "host=h",
        "\0",
        "://",
    ];
    // A fixed xorshift sequence: the same strings on every run.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = next() % 12;
        let mut s = String::new();
        for _ in 0..len {
            let i = usize::try_from(next() % PIECES.len() as u64).unwrap_or(0);
            s.push_str(PIECES[i]);
        }
        let _ = redact(&s);
        let with_secret = format!("{s}password=TOPSECRET");
        assert!(
            !redact(&with_secret).contains("TOPSECRET"),
            "{with_secret:?} shown as {:?}",
            redact(&with_secret)
        );
    }
}
