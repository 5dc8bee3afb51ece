//! Connection strings fit for messages: [`redact_connection_string`].

/// What a hidden value is replaced with.
const HIDDEN: &str = "***";

/// The setting whose value is hidden (matched in any case, also inside longer names such as
/// `sslpassword`).
const SECRET: &str = "password";

/// A PostgreSQL connection string with every password hidden, fit for messages and logs.
///
/// Both forms that libpq and tokio-postgres read are handled, and everything but the hidden
/// values is kept as written:
///
/// * URLs (`postgres://`, `postgresql://`, any `scheme://`): the password of the user info
///   (`postgres://user:***@host/db`), and the value of every query parameter whose name
///   contains `password` in any case, percent-encoded or not (`?password=***`,
///   `&sslpassword=***`). A password holding an unencoded `@`, `/` or `?` is hidden whole.
/// * `key=value` settings (`host=h user=u password=***`): the value of every setting whose name
///   contains `password` in any case, quoted (`password='a b'`) or not, with or without spaces
///   around `=`.
///
/// Malformed strings are read the same lenient way, so what the driver could take for a
/// password is hidden: an unterminated quoted value is hidden up to the end, a `password` setting
/// without `=` hides the rest of the string, and a URL without `@` whose port is not a number
/// (`postgres://user:secret`) has the port hidden. The function never panics.
///
/// ```
/// use dispatcher_broker_pg::redact_connection_string;
///
/// assert_eq!(
///     redact_connection_string("postgres://app:s3cret@db:5432/app?sslmode=require"),
///     "postgres://app:***@db:5432/app?sslmode=require"
/// );
/// assert_eq!(
///     redact_connection_string("postgres://app@db/app?password=s3cret"),
///     "postgres://app@db/app?password=***"
/// );
/// assert_eq!(
///     redact_connection_string("host=db user=app password='s3 cret' dbname=app"),
///     "host=db user=app password=*** dbname=app"
/// );
/// ```
pub fn redact_connection_string(conn: &str) -> String {
    let s = conn.trim();
    match url_rest_start(s) {
        Some(start) => redact_url(s, start),
        None => redact_settings(s),
    }
}

/// The byte index right after `scheme://` when `s` starts with a URL scheme.
fn url_rest_start(s: &str) -> Option<usize> {
    let end = s.find("://")?;
    let mut scheme = s[..end].chars();
    let first = scheme.next()?;
    let is_scheme = first.is_ascii_alphabetic()
        && scheme.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    is_scheme.then_some(end + 3)
}

fn redact_url(s: &str, start: usize) -> String {
    let (scheme, rest) = s.split_at(start);
    let mut out = String::with_capacity(s.len() + HIDDEN.len());
    out.push_str(scheme);
    let after_userinfo = match userinfo_end(rest) {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(&redact_settings(user));
                    out.push(':');
                    out.push_str(HIDDEN);
                }
                None => out.push_str(&redact_settings(userinfo)),
            }
            &rest[at..]
        }
        None => rest,
    };
    let (host_and_path, query) = match after_userinfo.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (after_userinfo, None),
    };
    if after_userinfo.len() == rest.len() {
        // No user info: a `user:password` written without `@host` reads as `host:port`.
        let host_end = host_and_path.find('/').unwrap_or(host_and_path.len());
        let (hosts, path) = host_and_path.split_at(host_end);
        out.push_str(&redact_settings(&hide_odd_ports(hosts)));
        out.push_str(&redact_settings(path));
    } else {
        out.push_str(&redact_settings(host_and_path));
    }
    if let Some(query) = query {
        out.push('?');
        out.push_str(&redact_query(query));
    }
    out
}

/// Where the user info of `rest` (the URL after `scheme://`) ends: the last `@` before the host
/// ends. The host starts after the first `@` (as tokio-postgres reads it) and ends at the next
/// `/` or `?`, so a password with an unencoded `@`, `/` or `?` stays inside the user info.
fn userinfo_end(rest: &str) -> Option<usize> {
    let first = rest.find('@')?;
    let host_end = rest[first..]
        .find(['/', '?'])
        .map_or(rest.len(), |i| first + i);
    rest[..host_end].rfind('@')
}

/// Comma-separated `host[:port]` entries with every port that is not a number hidden.
fn hide_odd_ports(hosts: &str) -> String {
    hosts
        .split(',')
        .map(|entry| {
            let port_start = if entry.starts_with('[') {
                entry
                    .find("]:")
                    .map(|i| i + 2)
                    .or_else(|| entry.find(':').map(|i| i + 1))
            } else {
                entry.find(':').map(|i| i + 1)
            };
            match port_start {
                Some(p) if !entry[p..].bytes().all(|b| b.is_ascii_digit()) => {
                    format!("{}{HIDDEN}", &entry[..p])
                }
                _ => entry.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `name=value` parameters joined by `&`, with the values of secret names hidden.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if is_secret_name(name) => format!("{name}={HIDDEN}"),
            _ => redact_settings(param),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_secret_name(name: &str) -> bool {
    percent_decode(name).to_lowercase().contains(SECRET)
}

/// `%XX` escapes decoded; anything else (including broken escapes) kept.
fn percent_decode(s: &str) -> String {
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            if let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                // Two hex digits make at most 0xff.
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'%'));
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key=value` text with the value of every `...password...` setting hidden. Values are read as
/// libpq reads them: spaces around `=` are skipped, a value is quoted (`'a \' b'`) or runs to the
/// next whitespace, and `\` escapes the next character.
fn redact_settings(s: &str) -> String {
    // ASCII lowercasing keeps every byte offset (and so every char boundary) of `s`.
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = lower.get(from..).and_then(|rest| rest.find(SECRET)) {
        let name_end = from + found + SECRET.len();
        let eq = skip_whitespace(s, name_end);
        if s[eq..].starts_with('=') {
            out.push_str(&s[copied..name_end]);
            out.push('=');
            out.push_str(HIDDEN);
            let end = value_end(s, skip_whitespace(s, eq + 1));
            copied = end;
            from = end;
        } else if is_bare_secret_setting(s, from + found, name_end, eq) {
            // `password` followed by something other than `=`: what follows may be the password.
            out.push_str(&s[copied..name_end]);
            out.push(' ');
            out.push_str(HIDDEN);
            copied = s.len();
            break;
        } else {
            from = name_end;
        }
    }
    out.push_str(&s[copied..]);
    out
}

/// True when the `password` at `start..end` is a setting name of its own (it starts the string
/// or follows whitespace, and is not the start of a longer name) and more text follows it
/// without an `=` in between.
fn is_bare_secret_setting(s: &str, start: usize, end: usize, next: usize) -> bool {
    let starts_token = s[..start]
        .chars()
        .next_back()
        .is_none_or(char::is_whitespace);
    let name_goes_on = s[end..]
        .chars()
        .next()
        .is_some_and(|c| c.is_alphanumeric() || c == '_');
    starts_token && !name_goes_on && next < s.len()
}

/// The first index at or after `i` that is not whitespace (`s.len()` when none is).
fn skip_whitespace(s: &str, i: usize) -> usize {
    s[i..]
        .char_indices()
        .find(|(_, c)| !c.is_whitespace())
        .map_or(s.len(), |(j, _)| i + j)
}

/// Where the value starting at `start` ends: after its closing quote, at the next whitespace, or
/// at the end of `s` (an unterminated quote runs to the end).
fn value_end(s: &str, start: usize) -> usize {
    let rest = &s[start..];
    let quoted = rest.starts_with('\'');
    let mut chars = rest.char_indices().skip(usize::from(quoted));
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' if quoted => return start + i + 1,
            c if !quoted && c.is_whitespace() => return start + i,
            _ => {}
        }
    }
    s.len()
}

#[cfg(test)]
mod tests;
