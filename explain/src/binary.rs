//! Files of no known format: a hex window around the first difference.

use serde_json::json;

use crate::common::{first_difference, Class, Finding, Format};

/// Bytes per hex line.
const WIDTH: usize = 16;
/// Lines shown before and after the line holding the first difference.
const CONTEXT: usize = 3;

/// Compares two files as bytes.
pub(crate) fn explain(a: &[u8], b: &[u8]) -> Finding {
    let Some(first) = first_difference(a, b) else {
        return Finding::new(Format::Binary, Class::Identical, "");
    };
    let first = first as usize;
    let differing =
        a.iter().zip(b).filter(|(x, y)| x != y).count() as u64 + a.len().abs_diff(b.len()) as u64;
    let mut f = Finding::new(
        Format::Binary,
        Class::Unknown,
        format!("{differing} bytes differ, first at byte {first}"),
    );
    let line = first / WIDTH * WIDTH;
    let start = line.saturating_sub(CONTEXT * WIDTH);
    let end = line + (CONTEXT + 1) * WIDTH;
    for (name, d, other) in [("expected", a, b), ("actual", b, a)] {
        f.details.push(heading(name, d.len(), other.len(), end));
        f.details.extend(window(d, other, start, end));
    }
    f.facts = json!({ "differing_bytes": differing, "window_start": start });
    f
}

/// `actual:`, saying so when the side is empty, or shorter than the other
/// and ends inside the window (the window starts at or before the first
/// difference, so a side never ends before it).
fn heading(name: &str, len: usize, other: usize, end: usize) -> String {
    if len == 0 {
        format!("{name}: (empty, 0 bytes)")
    } else if len < other && len < end {
        format!("{name}: (ends at byte {len})")
    } else {
        format!("{name}:")
    }
}

/// Hex lines of `d` between `start` and `end`; bytes that differ from
/// `other` are marked with `^` on the line below.
fn window(d: &[u8], other: &[u8], start: usize, end: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut off = start;
    while off < end.min(d.len()) {
        let row = &d[off..(off + WIDTH).min(d.len())];
        let hex: Vec<String> = row.iter().map(|x| format!("{x:02x}")).collect();
        let ascii: String = row
            .iter()
            .map(|&c| {
                if c.is_ascii_graphic() || c == b' ' {
                    c as char
                } else {
                    '.'
                }
            })
            .collect();
        lines.push(format!("{off:08x}  {:<47}  |{ascii}|", hex.join(" ")));
        let marks: String = row
            .iter()
            .enumerate()
            .map(|(i, x)| {
                if other.get(off + i) == Some(x) {
                    "   "
                } else {
                    "^^ "
                }
            })
            .collect();
        if marks.contains('^') {
            lines.push(format!("{:8}  {}", "", marks.trim_end()));
        }
        off += WIDTH;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_side_that_ends_is_said_to_end() {
        let a: Vec<u8> = (0u8..40).collect();
        // Empty: there used to be a bare `actual:` with no line under it.
        let f = explain(&a, &[]);
        let at = f.details.iter().position(|l| l.starts_with("actual"));
        assert_eq!(
            at.map(|i| f.details[i..].to_vec()),
            Some(vec!["actual: (empty, 0 bytes)".to_string()])
        );
        assert_eq!(f.details[0], "expected:");
        // A prefix: the shorter side's last line, and where it ends.
        let f = explain(&a, &a[..20]);
        assert_eq!(f.what, "20 bytes differ, first at byte 20");
        assert!(f.details.contains(&"actual: (ends at byte 20)".to_string()));
        assert!(f.details.contains(&"expected:".to_string()));
        let f = explain(&a[..20], &a);
        assert!(f
            .details
            .contains(&"expected: (ends at byte 20)".to_string()));
        assert!(f.details.contains(&"actual:".to_string()));
    }

    #[test]
    fn hex_window_marks_the_difference() {
        let a: Vec<u8> = (0u8..=255).collect();
        let mut b = a.clone();
        b[100] = 0;
        let f = explain(&a, &b);
        assert_eq!(f.what, "1 bytes differ, first at byte 100");
        assert_eq!(f.details[0], "expected:");
        assert!(
            f.details[1].starts_with("00000030  30 31"),
            "{}",
            f.details[1]
        );
        let marked = f
            .details
            .iter()
            .position(|l| l.contains("^^"))
            .expect("mark");
        assert!(f.details[marked - 1].starts_with("00000060  60 61 62 63 64"));
        assert_eq!(
            f.details[marked],
            format!("{:8}  {}^^", "", "   ".repeat(4))
        );
    }
}
