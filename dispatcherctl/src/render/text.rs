//! Plain-text building blocks: table layout, cut cells, and the order of slots.

use std::fmt::Display;

/// Longest text shown in a table cell before it is cut with `…`.
pub const CELL_MAX_CHARS: usize = 60;

/// At most `max` characters of `s`, the last one `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Renders rows under headers, columns left-aligned and two spaces apart, with a dashed rule
/// under the headers. Cells lose control characters and are cut at [`CELL_MAX_CHARS`].
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let clean = |s: &str| {
        let one_line: String = s
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        truncate(&one_line, CELL_MAX_CHARS)
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(c);
            if i + 1 < cells.len() {
                let w = widths.get(i).copied().unwrap_or(0);
                out.extend(std::iter::repeat_n(
                    ' ',
                    w.saturating_sub(c.chars().count()),
                ));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.iter().map(|h| (*h).to_owned()).collect());
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// Orders `worker-2` before `worker-10`, and workers before queued, blocked and delayed slots.
pub(super) fn slot_order(key: &str) -> (u8, u64, String) {
    let (prefix, number) = match key.rsplit_once('-') {
        Some((p, n)) => (p, n.parse::<u64>().ok()),
        None => (key, None),
    };
    let rank = match prefix {
        "worker" => 0,
        "queued" => 1,
        "blocked" => 2,
        "delayed" => 3,
        _ => 4,
    };
    (rank, number.unwrap_or(u64::MAX), key.to_owned())
}

/// A table cell: the value, or `-` when there is none.
pub(super) fn or_dash<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A table cell for text: `-` when empty.
pub(super) fn text_or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// Milliseconds with one decimal, `-` when unknown.
pub(super) fn ms(v: Option<f64>) -> String {
    or_dash(v.map(|x| format!("{x:.1}")))
}

/// `n` and the noun, plural unless `n` is 1.
pub(super) fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_cut() {
        let long = "y".repeat(100);
        let out = render_table(
            &["a", "bb"],
            &[
                vec!["xxx".into(), "1".into()],
                vec!["z\nz".into(), long.clone()],
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "a    bb");
        assert_eq!(lines[1], format!("---  {}", "-".repeat(CELL_MAX_CHARS)));
        assert_eq!(lines[2], "xxx  1");
        assert!(lines[3].starts_with("z z  yyy"), "{out}");
        assert!(lines[3].ends_with('…') && !out.contains(&long), "{out}");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
    }

    #[test]
    fn slots_sort_by_kind_then_number() {
        let mut keys = vec![
            "queued-0",
            "worker-10",
            "delayed-1",
            "worker-2",
            "blocked-3",
        ];
        keys.sort_by_key(|k| slot_order(k));
        assert_eq!(
            keys,
            [
                "worker-2",
                "worker-10",
                "queued-0",
                "blocked-3",
                "delayed-1"
            ]
        );
    }
}
