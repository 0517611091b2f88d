//! RFC 5424 syslog messages for audit entries, and RFC 6587 octet-counting
//! framing for sending them over TCP.
//!
//! One message per entry:
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME repro PROCID KIND [repro@32473 seq="" subject="" actor="" keyid="" prev=""] {details}
//! ```
//!
//! PRI is the facility (auth 4, authpriv 10 by default, or local0 16) times
//! 8 plus severity notice (5). TIMESTAMP is the entry's time (microseconds,
//! UTC). The structured data uses the private enterprise number 32473 that
//! RFC 5424 reserves for examples; MSG is the compact JSON of `details`.

use crate::audit::Entry;

/// The structured-data id of the `repro` element.
pub const SD_ID: &str = "repro@32473";

/// Severity notice: normal but significant (every audit entry is).
const SEVERITY_NOTICE: u8 = 5;

/// The syslog facility the messages are filed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Facility {
    /// Security/authorization messages (4).
    Auth,
    /// Private security/authorization messages (10).
    Authpriv,
    /// Local use 0 (16).
    Local0,
}

impl std::str::FromStr for Facility {
    type Err = String;
    fn from_str(s: &str) -> Result<Facility, String> {
        match s {
            "auth" => Ok(Facility::Auth),
            "authpriv" => Ok(Facility::Authpriv),
            "local0" => Ok(Facility::Local0),
            other => Err(format!(
                "`{other}` is not a syslog facility: use `auth`, `authpriv` or `local0`"
            )),
        }
    }
}

impl Facility {
    /// The facility's number.
    pub fn code(self) -> u8 {
        match self {
            Facility::Auth => 4,
            Facility::Authpriv => 10,
            Facility::Local0 => 16,
        }
    }
}

/// Where the messages come from: HOSTNAME and PROCID.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The host name (`-` when unknown).
    pub hostname: String,
    /// The process id.
    pub procid: u32,
}

impl Origin {
    /// This host and process.
    pub fn this_process() -> Origin {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        Origin {
            hostname,
            procid: std::process::id(),
        }
    }
}

/// The RFC 5424 message for `entry` (without framing or newline).
pub fn format(entry: &Entry, facility: Facility, origin: &Origin) -> String {
    let pri = facility.code() * 8 + SEVERITY_NOTICE;
    let actor = entry.actor.to_string();
    let details = serde_json::to_string(&entry.details).unwrap_or_else(|_| "null".into());
    format!(
        "<{pri}>1 {} {} repro {} {} [{SD_ID} seq=\"{}\" subject=\"{}\" actor=\"{}\" keyid=\"{}\" prev=\"{}\"] {details}",
        timestamp(&entry.time),
        header_field(&origin.hostname, 255),
        origin.procid,
        header_field(&entry.kind, 32),
        entry.seq,
        param_value(&entry.subject),
        param_value(&actor),
        param_value(&entry.actor.keyid),
        param_value(&entry.prev),
    )
}

/// RFC 6587 octet counting: `<length> <message>`.
pub fn frame(message: &str) -> String {
    format!("{} {message}", message.len())
}

/// An RFC 5424 TIMESTAMP (at most six fractional digits) from an RFC 3339
/// time; the NILVALUE `-` when it does not parse.
fn timestamp(time: &str) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    crate::clock::parse(time)
        .and_then(|t| t.to_offset(time::UtcOffset::UTC).format(&format).ok())
        .unwrap_or_else(|| "-".to_string())
}

/// A header field: printable US-ASCII without spaces, at most `max` long;
/// `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if clean.is_empty() {
        "-".to_string()
    } else {
        clean
    }
}

/// A PARAM-VALUE with `"`, `\` and `]` escaped by a backslash.
fn param_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::Identity;

    fn entry() -> Entry {
        Entry {
            seq: 7,
            time: "2026-03-13T10:20:30.123456789Z".into(),
            prev: "ab".repeat(32),
            kind: "build".into(),
            subject: "m@1\"]\\x".into(),
            actor: Identity {
                keyid: "sha256:00".into(),
                name: Some("Ann".into()),
                email: None,
            },
            details: serde_json::json!({"b": 1, "a": "x y"}),
            sig: "c2ln".into(),
        }
    }

    #[test]
    fn a_message_has_every_rfc5424_field_and_escapes_param_values() {
        let origin = Origin {
            hostname: "h 1".into(),
            procid: 42,
        };
        let m = format(&entry(), Facility::Authpriv, &origin);
        assert_eq!(
            m,
            format!(
                "<85>1 2026-03-13T10:20:30.123456Z h_1 repro 42 build [repro@32473 seq=\"7\" subject=\"m@1\\\"\\]\\\\x\" actor=\"Ann (00)\" keyid=\"sha256:00\" prev=\"{}\"] {{\"a\":\"x y\",\"b\":1}}",
                "ab".repeat(32)
            )
        );
        assert!(format(&entry(), Facility::Local0, &origin).starts_with("<133>1 "));
        assert!(format(&entry(), Facility::Auth, &origin).starts_with("<37>1 "));
    }

    #[test]
    fn an_unparseable_time_becomes_the_nil_value() {
        let mut e = entry();
        e.time = "yesterday".into();
        let origin = Origin {
            hostname: String::new(),
            procid: 1,
        };
        assert!(format(&e, Facility::Authpriv, &origin).starts_with("<85>1 - - repro 1 build "));
    }

    #[test]
    fn octet_counting_counts_bytes_not_characters() {
        assert_eq!(frame("é"), "2 é");
    }
}
