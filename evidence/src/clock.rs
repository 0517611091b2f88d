//! The one clock: every timestamp `repro` writes is RFC 3339 UTC.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::env_vars;
use crate::exit::UserError;

/// Now, RFC 3339 UTC (for example `2026-12-04T17:05:00.123456789Z`).
pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

/// The build's date for the version placeholder `{date}`: `YYYYMMDD` in
/// UTC, of `SOURCE_DATE_EPOCH` (whole seconds since the epoch) when it is
/// set and not empty, else of now. Only this date follows
/// `SOURCE_DATE_EPOCH`: the times a record holds are always the real ones
/// (retention reads them). A value that is not a time is a user error
/// (exit 2) naming the variable, as the specification asks.
pub fn build_date() -> Result<String, UserError> {
    let var = env_vars::SOURCE_DATE_EPOCH;
    let t = match std::env::var(var) {
        Ok(v) if !v.is_empty() => date_of_epoch(&v).ok_or_else(|| {
            UserError(format!(
                "`{var}` is `{v}`, not a time\nhint: set it to whole seconds since 1970-01-01 UTC, e.g. `{var}=$(date +%s)`, or unset it to use today's date"
            ))
        })?,
        _ => OffsetDateTime::now_utc(),
    };
    Ok(yyyymmdd(t))
}

fn date_of_epoch(v: &str) -> Option<OffsetDateTime> {
    let secs: i64 = v.trim().parse().ok()?;
    OffsetDateTime::from_unix_timestamp(secs).ok()
}

fn yyyymmdd(t: OffsetDateTime) -> String {
    let d = t.date();
    format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
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

    #[test]
    fn build_dates_are_utc_days() {
        let d = |v: &str| super::date_of_epoch(v).map(super::yyyymmdd);
        assert_eq!(d("0").as_deref(), Some("19700101"));
        // 2026-03-04T23:59:59Z, and one second later.
        assert_eq!(d("1772668799").as_deref(), Some("20260304"));
        assert_eq!(d("1772668800").as_deref(), Some("20260305"));
        assert_eq!(d("yesterday"), None);
        assert_eq!(d("1.5"), None);
    }
}
