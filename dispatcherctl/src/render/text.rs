//! Plain-text building blocks: table layout, cut cells, and the order of slots.

use std::fmt::Display;

use comfy_table::{CellAlignment, ContentArrangement, Table};

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

/// Renders rows under headers with `comfy-table`: columns two spaces apart, a dashed rule
/// under the headers, numbers right-aligned (a column whose cells are all numbers or `-`, at
/// least one a number).
/// Cells lose control characters and are cut at [`CELL_MAX_CHARS`] ([`truncate`]); lines carry
/// no trailing spaces.
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
    let mut table = Table::new();
    table
        .load_preset(STYLE)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.iter().copied());
    for row in &rows {
        table.add_row(row);
    }
    let last = headers.len().saturating_sub(1);
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 2 }));
        let number = |c: &String| c.parse::<f64>().is_ok();
        let numeric = rows.iter().any(|r| r.get(i).is_some_and(number))
            && rows
                .iter()
                .all(|r| r.get(i).is_none_or(|c| c == "-" || number(c)));
        if numeric {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The table style: no borders, no column lines, `-` under the headers.
const STYLE: &str = "     -             ";

/// How many characters of a uuid the tables show at least: enough to be accepted by `cancel`,
/// `running` and `history` (which take a uuid's beginning).
pub const UUID_SHOWN: usize = 8;

/// The uuids as the tables show them: their first [`UUID_SHOWN`] characters, more where two
/// different uuids of the same table would begin alike, so each shown prefix picks its Call.
pub fn short_uuids(uuids: &[&str]) -> Vec<String> {
    let mut distinct: Vec<&str> = uuids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    // Sorted, a uuid shares its longest common beginning with a neighbour.
    let common = |a: &str, b: &str| a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    uuids
        .iter()
        .map(|u| {
            let at = distinct.binary_search(u).unwrap_or(0);
            let before = at
                .checked_sub(1)
                .and_then(|i| distinct.get(i))
                .map_or(0, |n| common(n, u));
            let after = distinct.get(at + 1).map_or(0, |n| common(n, u));
            let keep = UUID_SHOWN.max(before.max(after) + 1);
            text_or_dash(&u.chars().take(keep).collect::<String>())
        })
        .collect()
}

/// A number for people: no more decimals than it needs (`0.6563610000000001` → `0.66`,
/// `12.345` → `12.3`, `1234.6` → `1235`).
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_owned();
    }
    let a = v.abs();
    let text = if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    // No `-0.00` for a tiny negative.
    match text.strip_prefix('-') {
        Some(rest) if rest.parse::<f64>().is_ok_and(|x| x == 0.0) => rest.to_owned(),
        _ => text,
    }
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
        assert_eq!(lines[1], "-".repeat(5 + CELL_MAX_CHARS));
        assert_eq!(lines[2], "xxx  1");
        assert!(lines[3].starts_with("z z  yyy"), "{out}");
        assert!(lines[3].ends_with('…') && !out.contains(&long), "{out}");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
    }

    #[test]
    fn numbers_align_right_and_round() {
        let out = render_table(
            &["name", "n"],
            &[vec!["a".into(), "5".into()], vec!["b".into(), "120".into()]],
        );
        assert_eq!(out, "name    n\n---------\na       5\nb     120\n");
        assert_eq!(num(0.656_361_000_000_000_1), "0.66");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(1234.6), "1235");
        assert_eq!(num(3.0), "3");
        assert_eq!(num(-0.001), "0.00");
    }

    #[test]
    fn uuids_are_shown_long_enough_to_pick_one() {
        let shown = short_uuids(&[
            "9760671a-6261-45aa-881a-f66929ff9725",
            "9760671a-7000-45aa-881a-f66929ff9725",
            "0b1c7e52-3f7d-4c55-9a43-2f1e0d7c9b11",
            "9760671a-6261-45aa-881a-f66929ff9725",
            "u1",
        ]);
        assert_eq!(
            shown,
            ["9760671a-6", "9760671a-7", "0b1c7e52", "9760671a-6", "u1"]
        );
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
