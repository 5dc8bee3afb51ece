//! Formatting numbers, times and outcomes for the pages.

use dispatcher_core::Outcome;
use maud::{html, Markup};

/// The first 8 characters of a uuid.
pub(crate) fn short(uuid: &str) -> &str {
    uuid.get(..8).unwrap_or(uuid)
}

/// `HH:MM:SS.mmm` (UTC) of epoch seconds.
pub(crate) fn clock(epoch: f64) -> String {
    if !epoch.is_finite() || epoch <= 0.0 {
        return "-".into();
    }
    let ms = (epoch * 1000.0).round() as u64;
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

/// `YYYY-MM-DD HH:MM:SS.mmm UTC` of epoch seconds.
pub(crate) fn timestamp(epoch: f64) -> String {
    if !epoch.is_finite() || epoch <= 0.0 {
        return "-".into();
    }
    let days = (epoch / 86_400.0).floor() as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {} UTC", clock(epoch))
}

/// A duration in seconds, briefly.
pub(crate) fn span(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        "-".into()
    } else if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} d", s / 86_400.0)
    }
}

pub(crate) fn ms(v: Option<f64>) -> String {
    v.map(|v| {
        if v < 10.0 {
            format!("{v:.2} ms")
        } else {
            format!("{v:.0} ms")
        }
    })
    .unwrap_or("-".into())
}

pub(crate) fn rate(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1}/s")
    } else {
        format!("{v:.0}/s")
    }
}

pub(crate) fn outcome_badge(o: Option<Outcome>) -> Markup {
    let (name, class) = match o {
        None => ("running", "run"),
        Some(Outcome::Ok) => ("ok", "ok"),
        Some(Outcome::Canceled) | Some(Outcome::Discarded) => {
            (o.map_or("", |o| o.as_str()), "muted")
        }
        Some(o) => (o.as_str(), "bad"),
    };
    html! { span class={"badge " (class)} { (name) } }
}

pub(crate) fn json_text(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}
