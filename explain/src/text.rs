//! Text files: a unified diff, and whether only numbers, embedded
//! timestamps, line order or line endings differ.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use regex::Regex;
use serde_json::json;
use similar::TextDiff;

use crate::common::{is_text, Class, Finding, Format, STRUCTURE_LIMIT};
use crate::error::{side, Error, Result};
use crate::numeric::Stats;

/// Lines of unified diff kept in the details.
const DIFF_LINES: usize = 30;
/// Longest a line diff may take. Myers' algorithm takes time in the size
/// of the files times the size of their difference: two files of 64 MiB
/// with no line in common would take hours. Past this it settles for a
/// coarser (still correct) diff, so only such files get a diff that may
/// vary from one run to the next.
pub(crate) const DIFF_TIMEOUT: Duration = Duration::from_secs(1);

fn number_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|(?i:nan|[-+]?inf(?:inity)?)")
            .unwrap_or_else(|e| panic!("number pattern is invalid: {e}"))
    })
}

fn timestamp_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(concat!(
            r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?",
            r"|\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b",
            r"|\b\d{10}(?:\.\d+)?\b|\b\d{13}\b",
        ))
        .unwrap_or_else(|e| panic!("timestamp pattern is invalid: {e}"))
    })
}

/// Whether a bare number reads as epoch seconds (or milliseconds) within the
/// last 30 years or the next day.
fn is_recent_epoch(s: &str) -> bool {
    let Ok(x) = s.parse::<f64>() else {
        return false;
    };
    let secs = if s.len() == 13 && !s.contains('.') {
        x / 1000.0
    } else {
        x
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    secs > now - 30.0 * 365.25 * 86400.0 && secs < now + 86400.0
}

/// Replaces what looks like a timestamp with a placeholder; returns the text
/// and how many timestamps were masked.
pub(crate) fn mask_timestamps(s: &str) -> (String, usize) {
    let mut n = 0;
    let masked = timestamp_re().replace_all(s, |c: &regex::Captures<'_>| {
        let m = &c[0];
        let bare = m.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if bare && !is_recent_epoch(m) {
            m.to_string()
        } else {
            n += 1;
            "\u{1}TS\u{1}".to_string()
        }
    });
    (masked.into_owned(), n)
}

/// Splits text into the parts between numbers and the numbers themselves.
fn split_numbers(s: &str) -> (Vec<&str>, Vec<&str>) {
    let mut rest = Vec::new();
    let mut nums = Vec::new();
    let mut last = 0;
    for m in number_re().find_iter(s) {
        rest.push(&s[last..m.start()]);
        nums.push(m.as_str());
        last = m.end();
    }
    rest.push(&s[last..]);
    (rest, nums)
}

/// When two strings differ only in the numbers they contain, the comparison
/// of those numbers.
pub(crate) fn numbers_only(a: &str, b: &str) -> Option<Stats> {
    let (ra, na) = split_numbers(a);
    let (rb, nb) = split_numbers(b);
    if ra != rb || na.len() != nb.len() {
        return None;
    }
    let mut stats = Stats::default();
    for (i, (x, y)) in na.iter().zip(&nb).enumerate() {
        stats.total += 1;
        if x != y {
            let (Ok(p), Ok(q)) = (parse_num(x), parse_num(y)) else {
                return None;
            };
            stats.add(i as u64, p, q, None);
        }
    }
    Some(stats)
}

fn parse_num(s: &str) -> std::result::Result<f64, std::num::ParseFloatError> {
    s.trim_start_matches('+').parse()
}

/// The line diff of two texts, within [`DIFF_TIMEOUT`].
fn line_diff<'a>(a: &'a str, b: &'a str) -> TextDiff<'a, 'a, 'a, str> {
    TextDiff::configure().timeout(DIFF_TIMEOUT).diff_lines(a, b)
}

/// A unified diff, at most `max` lines.
fn unified<'a>(diff: &'a TextDiff<'a, 'a, 'a, str>, max: usize) -> Vec<String> {
    let text = diff
        .unified_diff()
        .context_radius(2)
        .header("expected", "actual")
        .to_string();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.len() > max {
        let more = lines.len() - max;
        lines.truncate(max);
        lines.push(format!("... {more} more diff lines"));
    }
    lines
}

/// Compares two text files.
pub(crate) fn explain(a: &[u8], b: &[u8]) -> Result<Finding> {
    for (i, d) in [a, b].into_iter().enumerate() {
        if d.len() > STRUCTURE_LIMIT {
            return Err(Error::TooLarge {
                limit: STRUCTURE_LIMIT,
            });
        }
        if !is_text(d) {
            return Err(Error::NotText { side: side(i) });
        }
    }
    let (sa, sb) = match (std::str::from_utf8(a), std::str::from_utf8(b)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(_), _) => return Err(Error::NotText { side: side(0) }),
        (_, Err(_)) => return Err(Error::NotText { side: side(1) }),
    };
    let diff = line_diff(sa, sb);
    let changed = diff
        .ops()
        .iter()
        .filter(|op| op.tag() != similar::DiffTag::Equal)
        .count();
    let (class, what, facts) = classify(sa, sb);
    let mut f = Finding::new(Format::Text, class, what);
    if f.class == Class::Unknown {
        f.what = format!("{changed} hunks of lines differ");
    }
    f.details = unified(&diff, DIFF_LINES);
    f.facts = facts;
    Ok(f)
}

fn classify(a: &str, b: &str) -> (Class, String, serde_json::Value) {
    if a.replace("\r\n", "\n") == b.replace("\r\n", "\n") {
        return (
            Class::MetadataOnly,
            "line endings".into(),
            json!({ "kind": "line endings" }),
        );
    }
    let (ma, ta) = mask_timestamps(a);
    let (mb, tb) = mask_timestamps(b);
    if ma == mb && ta + tb > 0 {
        return (
            Class::MetadataOnly,
            "likely embedded timestamp".into(),
            json!({ "kind": "timestamp", "timestamps": ta }),
        );
    }
    if let Some(stats) = numbers_only(a, b) {
        if stats.differing > 0 {
            let what = stats.describe("numbers");
            return (
                stats.class(),
                what,
                json!({ "kind": "numbers", "numbers": stats.to_json() }),
            );
        }
    }
    let mut la: Vec<&str> = a.lines().collect();
    let mut lb: Vec<&str> = b.lines().collect();
    la.sort_unstable();
    lb.sort_unstable();
    if la == lb {
        return (
            Class::OrderOnly,
            "line order".into(),
            json!({ "kind": "line order" }),
        );
    }
    (Class::Unknown, String::new(), json!({ "kind": "lines" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_iso_dates_and_recent_epochs_only() {
        let (m, n) = mask_timestamps("built 2024-05-01T12:00:00Z at 1700000000 seed 9999999999999");
        assert_eq!(n, 2, "{m}");
        assert!(m.contains("seed 9999999999999"), "{m}");
        let (_, n) = mask_timestamps("count 0000000042 rows");
        assert_eq!(n, 0);
    }

    #[test]
    fn numbers_only_requires_same_text_around_numbers() {
        let s = numbers_only("loss 0.25 acc 0.9", "loss 0.26 acc 0.9").expect("numbers");
        assert_eq!((s.total, s.differing), (2, 1));
        assert!(numbers_only("loss 0.25", "lost 0.25").is_none());
    }
}
