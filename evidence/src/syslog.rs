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
//!
//! An export ends with the signed checkpoint of the head it exported, as a
//! message of its own with MSGID [`CHECKPOINT_MSGID`]:
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME repro PROCID audit-checkpoint [repro@32473 seq="" sha256="" signer="" keyid=""] {DSSE envelope}
//! ```
//!
//! TIMESTAMP is the time of signing, and MSG the compact JSON of the DSSE
//! envelope ([`crate::audit::CHECKPOINT_PAYLOAD_TYPE`]), which
//! `repro audit verify --checkpoint` reads back from a file of messages.

use crate::audit::{Checkpoint, Entry};
use crate::keys::Envelope;

/// The MSGID of the message carrying a signed checkpoint (no entry has
/// this kind).
pub const CHECKPOINT_MSGID: &str = "audit-checkpoint";

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

/// The RFC 5424 message carrying the signed checkpoint `envelope`, whose
/// opened payload is `checkpoint` (without framing or newline).
pub fn format_checkpoint(
    envelope: &Envelope,
    checkpoint: &Checkpoint,
    facility: Facility,
    origin: &Origin,
) -> String {
    let pri = facility.code() * 8 + SEVERITY_NOTICE;
    let signer = checkpoint.signer.clone().unwrap_or_default();
    let msg = serde_json::to_string(envelope).unwrap_or_else(|_| "null".into());
    format!(
        "<{pri}>1 {} {} repro {} {CHECKPOINT_MSGID} [{SD_ID} seq=\"{}\" sha256=\"{}\" signer=\"{}\" keyid=\"{}\"] {msg}",
        timestamp(checkpoint.time.as_deref().unwrap_or_default()),
        header_field(&origin.hostname, 255),
        origin.procid,
        checkpoint.seq,
        param_value(&checkpoint.sha256),
        param_value(&signer.to_string()),
        param_value(&signer.keyid),
    )
}

/// The envelope in a checkpoint message ([`format_checkpoint`], optionally
/// octet-counted); `None` for any other message. Not checked: see
/// [`crate::audit::open_checkpoint`].
pub fn parse_checkpoint(message: &str) -> Option<Envelope> {
    let message = message.trim_end_matches(['\r', '\n']);
    // Octet counting: `<length> <PRI>...`.
    let message = match message.split_once(' ') {
        Some((n, rest)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => message,
    };
    let fields: Vec<&str> = message.splitn(7, ' ').collect();
    if fields.len() != 7 || !fields[0].starts_with('<') || fields[5] != CHECKPOINT_MSGID {
        return None;
    }
    // Skip the structured data: `[...]` elements whose quoted values escape
    // `"`, `\` and `]` with a backslash.
    let sd = fields[6];
    let mut in_value = false;
    let mut depth = 0usize;
    let mut chars = sd.char_indices();
    let mut end = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if in_value => {
                chars.next();
            }
            '"' => in_value = !in_value,
            '[' if !in_value => depth += 1,
            ']' if !in_value => {
                depth = depth.checked_sub(1)?;
                if depth == 0 && !sd[i + 1..].starts_with('[') {
                    end = Some(i + 1);
                    break;
                }
            }
            _ => {}
        }
    }
    let msg = sd[end?..].strip_prefix(' ')?;
    Envelope::parse(msg.as_bytes()).ok()
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
    fn a_checkpoint_message_carries_its_envelope_and_reads_back() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]);
        let head = Checkpoint {
            seq: 12,
            sha256: "cd".repeat(32),
            time: None,
            signer: None,
            source: None,
        };
        let who = Identity {
            keyid: String::new(),
            name: Some("Ann \"]".into()),
            email: None,
        };
        let env = crate::audit::sign_checkpoint(&head, &key, &who);
        let cp: Checkpoint = env.unverified_payload().expect("payload");
        let origin = Origin {
            hostname: "h".into(),
            procid: 42,
        };
        let m = format_checkpoint(&env, &cp, Facility::Authpriv, &origin);
        assert!(
            m.starts_with(&format!(
                "<85>1 {} h repro 42 audit-checkpoint [repro@32473 seq=\"12\" sha256=\"{}\" signer=\"Ann \\\"\\] (",
                timestamp(cp.time.as_deref().expect("time")),
                "cd".repeat(32)
            )),
            "{m}"
        );
        assert!(m.ends_with(&format!("] {}", serde_json::to_string(&env).expect("json"))));
        assert_eq!(parse_checkpoint(&m), Some(env.clone()));
        assert_eq!(parse_checkpoint(&frame(&m)), Some(env));
        assert_eq!(
            parse_checkpoint(&format(&entry(), Facility::Authpriv, &origin)),
            None
        );
        assert_eq!(parse_checkpoint("audit-checkpoint"), None);
    }

    #[test]
    fn octet_counting_counts_bytes_not_characters() {
        assert_eq!(frame("é"), "2 é");
    }
}
