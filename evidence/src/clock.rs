//! The one clock: every timestamp `repro` writes is RFC 3339 UTC.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, RFC 3339 UTC (for example `2026-12-04T17:05:00.123456789Z`).
pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

/// `t` as RFC 3339.
pub fn format(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Parse an RFC 3339 time; `None` if it is not one.
pub fn parse(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_round_trips() {
        let n = super::now();
        let t = super::parse(&n).expect("now() parses");
        assert!(n.ends_with('Z'), "{n}");
        assert_eq!(super::format(t), n);
        assert!(super::parse("yesterday").is_none());
    }
}
