//! Passwords in connection strings (URLs and key=value, in the user info or as options) never
//! reach the output, whatever the error and with or without `--json`.

use crate::support::ctl_raw;

#[tokio::test]
async fn passwords_never_show_whatever_the_connection_string() {
    use dispatcherctl::exit::{CONNECT, USAGE};
    // No server is needed: port 1 refuses connections, and `notaport` does not parse.
    let cases = [
        (
            "postgres://postgres@127.0.0.1:notaport/db?password=TOPSECRET",
            USAGE,
            "postgres://postgres@127.0.0.1:notaport/db?password=***",
        ),
        (
            "host=127.0.0.1 port=notaport user=postgres password=TOPSECRET",
            USAGE,
            "host=127.0.0.1 port=notaport user=postgres password=***",
        ),
        (
            "postgres://postgres@127.0.0.1:1/db?password=TOPSECRET&connect_timeout=2",
            CONNECT,
            "cannot connect to postgres://postgres@127.0.0.1:1/db?password=***&connect_timeout=2",
        ),
        (
            "postgresql://postgres:TOPSECRET@127.0.0.1:1/db?connect_timeout=2",
            CONNECT,
            "cannot connect to postgresql://postgres:***@127.0.0.1:1/db?connect_timeout=2",
        ),
        (
            // tokio-postgres knows `password` in lower case only: an unknown option
            "postgres://postgres:TOPSECRET@127.0.0.1:1/db?PassWord=TOPSECRET",
            USAGE,
            "postgres://postgres:***@127.0.0.1:1/db?PassWord=***",
        ),
        (
            "host=127.0.0.1 port=1 user=postgres password=TOPSECRET connect_timeout=2",
            CONNECT,
            "cannot connect to host=127.0.0.1 port=1 user=postgres password=*** connect_timeout=2",
        ),
        (
            "host=127.0.0.1 port=1 password = 'TOP SECRET' connect_timeout=2",
            CONNECT,
            "cannot connect to host=127.0.0.1 port=1 password=*** connect_timeout=2",
        ),
    ];
    for (url, code, shown) in cases {
        for json in [false, true] {
            let mut args = vec!["--database-url", url, "--timeout", "1"];
            if json {
                args.push("--json");
            }
            args.push("alive");
            let run = ctl_raw(&args).await;
            assert_eq!(run.code, i32::from(code), "{url}: {run:?}");
            assert_eq!(run.stdout, "", "{url}: {run:?}");
            assert!(
                !run.stderr.contains("TOPSECRET") && !run.stderr.contains("SECRET"),
                "{url}: {run:?}"
            );
            assert!(run.stderr.contains(shown), "{url}: {run:?}");
        }
    }
}
