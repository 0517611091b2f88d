//! Zip-based files (`.zip`, `.npz`, `.keras`, ...): which entries differ,
//! were added or removed, and whether only entry timestamps, other header
//! metadata or the entry order differ. Entries whose content differs are
//! explained by their own format (a `.npy` member of an `.npz` as an array).

use std::collections::{BTreeSet, HashMap};
use std::io::Cursor;

use serde_json::json;
use zip::ZipArchive;

use crate::common::{clip, Budget, Class, Finding, Format};
use crate::error::{side, Error, Result};

/// Largest entry decompressed for a comparison of its content.
const ENTRY_LIMIT: u64 = 512 << 20;
/// Differing entries explained in detail; the rest are only named.
const EXPLAINED: usize = 20;
/// Detail lines of one entry's explanation shown at most.
const ENTRY_LINES: usize = 12;
/// Detail lines of all entries' explanations shown at most (each differing
/// entry's summary line is shown besides).
const ENTRIES_LINES: usize = 30;
/// Extra field ids that only hold timestamps (extended timestamp, NTFS).
const TIME_FIELDS: [u16; 2] = [0x5455, 0x000a];

/// Header facts of one entry, from the central directory.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    name: String,
    crc: u32,
    size: u64,
    compressed: u64,
    method: String,
    mtime: String,
    mode: Option<u32>,
    extra: Vec<u8>,
    comment: String,
}

pub(crate) type Archive<'a> = ZipArchive<Cursor<&'a [u8]>>;

fn open(d: &[u8], i: usize) -> Result<(Archive<'_>, Vec<Entry>)> {
    let zerr = |source| Error::Zip {
        side: side(i),
        source,
    };
    let mut ar = ZipArchive::new(Cursor::new(d)).map_err(zerr)?;
    let mut entries = Vec::with_capacity(ar.len());
    for k in 0..ar.len() {
        let f = ar.by_index_raw(k).map_err(zerr)?;
        entries.push(Entry {
            name: f.name().to_string(),
            crc: f.crc32(),
            size: f.size(),
            compressed: f.compressed_size(),
            method: f.compression().to_string(),
            // torch and others write 0, which is no valid DOS date.
            mtime: f
                .last_modified()
                .map(|t| t.to_string())
                .unwrap_or_else(|| "(none)".into()),
            mode: f.unix_mode(),
            extra: f.extra_data().map(<[u8]>::to_vec).unwrap_or_default(),
            comment: f.comment().to_string(),
        });
    }
    Ok((ar, entries))
}

/// Extra field blocks (id, data) of an entry; unparsable trailing bytes are
/// kept as one block with id 0xffff.
fn extra_blocks(mut d: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while d.len() >= 4 {
        let id = u16::from_le_bytes([d[0], d[1]]);
        let len = usize::from(u16::from_le_bytes([d[2], d[3]]));
        if d.len() < 4 + len {
            break;
        }
        out.push((id, &d[4..4 + len]));
        d = &d[4 + len..];
    }
    if !d.is_empty() {
        out.push((0xffff, d));
    }
    out
}

/// Whether two extra fields differ only in timestamp blocks.
fn extra_differs_only_in_time(a: &[u8], b: &[u8]) -> bool {
    let strip = |d| {
        extra_blocks(d)
            .into_iter()
            .filter(|(id, _)| !TIME_FIELDS.contains(id))
            .collect::<Vec<_>>()
    };
    strip(a) == strip(b)
}

/// Reads the entry `name` of an archive of `len` bytes: at most
/// [`ENTRY_LIMIT`] bytes of it, and no more than `budget` has left.
pub(crate) fn read_entry(
    ar: &mut Archive<'_>,
    name: &str,
    len: usize,
    budget: &Budget,
    i: usize,
) -> Result<Vec<u8>> {
    let zerr = |source| Error::Zip {
        side: side(i),
        source,
    };
    let f = ar.by_name(name).map_err(zerr)?;
    let claimed = f.size();
    budget
        .read_to_end(f, ENTRY_LIMIT, claimed, len as u64)
        .map_err(|e| zerr(e.into()))?
        .ok_or(Error::Expansion {
            limit: budget.limit(),
        })
}

/// Compares two zip archives; `entry` explains two versions of one entry
/// (given its name), in whatever format the entry has.
pub(crate) fn explain(
    path: &str,
    a: &[u8],
    b: &[u8],
    budget: &Budget,
    entry: impl Fn(&str, &[u8], &[u8]) -> Finding,
) -> Result<Finding> {
    let (mut ara, ea) = open(a, 0)?;
    let (mut arb, eb) = open(b, 1)?;
    let npz = path.to_ascii_lowercase().ends_with(".npz")
        || (!ea.is_empty() && ea.iter().chain(&eb).all(|e| e.name.ends_with(".npy")));
    let format = if npz { Format::Npz } else { Format::Zip };

    let ib: HashMap<&str, &Entry> = eb.iter().map(|e| (e.name.as_str(), e)).collect();
    let ia: HashMap<&str, &Entry> = ea.iter().map(|e| (e.name.as_str(), e)).collect();
    let removed: Vec<&str> = ea
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| !ib.contains_key(n))
        .collect();
    let added: Vec<&str> = eb
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| !ia.contains_key(n))
        .collect();

    let mut content = Vec::new();
    let mut times = BTreeSet::new();
    let mut other_meta: BTreeSet<&'static str> = BTreeSet::new();
    let mut meta_entries = Vec::new();
    for x in &ea {
        let Some(y) = ib.get(x.name.as_str()) else {
            continue;
        };
        if x.crc != y.crc || x.size != y.size {
            content.push(x.name.clone());
            continue;
        }
        let mut what = Vec::new();
        if x.mtime != y.mtime {
            times.insert(x.name.clone());
            what.push(format!("time {} vs {}", x.mtime, y.mtime));
        }
        if x.extra != y.extra {
            if extra_differs_only_in_time(&x.extra, &y.extra) {
                times.insert(x.name.clone());
                what.push("extended timestamps".to_string());
            } else {
                other_meta.insert("extra fields");
                what.push("extra fields".to_string());
            }
        }
        if x.mode != y.mode {
            other_meta.insert("permissions");
            let mode = |m: Option<u32>| m.map(|m| format!("{m:o}")).unwrap_or_else(|| "-".into());
            what.push(format!("mode {} vs {}", mode(x.mode), mode(y.mode)));
        }
        if x.method != y.method || x.compressed != y.compressed {
            other_meta.insert("compression");
            what.push(format!(
                "compression {} {} bytes vs {} {} bytes",
                x.method, x.compressed, y.method, y.compressed
            ));
        }
        if x.comment != y.comment {
            other_meta.insert("comments");
            what.push("comment".to_string());
        }
        if !what.is_empty() {
            meta_entries.push(format!("entry `{}`: {}", x.name, what.join(", ")));
        }
    }
    let common_a: Vec<&str> = ea
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| ib.contains_key(n))
        .collect();
    let common_b: Vec<&str> = eb
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| ia.contains_key(n))
        .collect();
    let reordered = common_a != common_b;
    if ara.comment() != arb.comment() {
        other_meta.insert("archive comment");
    }

    let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
    let mut class = Class::Identical;
    let mut explained = Vec::new();
    for name in &content {
        if explained.len() >= EXPLAINED {
            blocks.push((
                format!("entry `{name}`: content differs (not examined)"),
                Vec::new(),
            ));
            class = class.combine(Class::Unknown);
            continue;
        }
        let sub = match (
            read_entry(&mut ara, name, a.len(), budget, 0),
            read_entry(&mut arb, name, b.len(), budget, 1),
        ) {
            (Ok(x), Ok(y)) => entry(name, &x, &y),
            (Err(e), _) | (_, Err(e)) => {
                let mut f = Finding::new(Format::Binary, Class::Unknown, "entry unreadable");
                f.details.push(e.to_string());
                f
            }
        };
        let sub = if sub.class == Class::Identical {
            // Header fields (size, CRC) disagree with the identical content.
            Finding::new(
                sub.format,
                Class::MetadataOnly,
                "entry header differs, content identical",
            )
        } else {
            sub
        };
        class = class.combine(sub.class);
        blocks.push((
            format!("entry `{name}`: {}", sub.summary()),
            sub.details.clone(),
        ));
        explained.push(json!({
            "name": name,
            "format": sub.format.as_str(),
            "class": sub.class.to_json(),
            "summary": sub.summary(),
            "facts": sub.facts,
        }));
    }
    let mut details = layout(blocks);
    for n in &removed {
        details.push(format!("entry `{n}`: removed"));
    }
    for n in &added {
        details.push(format!("entry `{n}`: added"));
    }
    if !added.is_empty() || !removed.is_empty() {
        class = Class::Unknown;
    }
    if reordered {
        details.push(format!(
            "entry order: {} vs {}",
            clip(&common_a.join(", "), 100),
            clip(&common_b.join(", "), 100)
        ));
    }
    details.extend(meta_entries.iter().take(10).cloned());

    let what = if !content.is_empty() || !added.is_empty() || !removed.is_empty() {
        if content.len() == 1 && added.is_empty() && removed.is_empty() {
            let sub_what = explained
                .first()
                .and_then(|e| e["summary"].as_str())
                .map(|s| {
                    s.split_once(": ")
                        .map(|(_, w)| w.to_string())
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            format!("entry `{}`: {sub_what}", content[0])
        } else {
            let mut parts = Vec::new();
            if !content.is_empty() {
                parts.push(format!("{} entries differ", content.len()));
            }
            if !added.is_empty() {
                parts.push(format!("{} added", added.len()));
            }
            if !removed.is_empty() {
                parts.push(format!("{} removed", removed.len()));
            }
            parts.join(", ")
        }
    } else if reordered {
        class = Class::OrderOnly;
        "zip entry order".to_string()
    } else if !times.is_empty() {
        class = Class::MetadataOnly;
        "zip entry timestamps".to_string()
    } else if !other_meta.is_empty() {
        class = Class::MetadataOnly;
        format!(
            "zip {}",
            other_meta.iter().copied().collect::<Vec<_>>().join(", ")
        )
    } else {
        class = Class::MetadataOnly;
        "zip header metadata".to_string()
    };
    if content.is_empty() && added.is_empty() && removed.is_empty() && !other_meta.is_empty() {
        details.push(format!(
            "also: {}",
            other_meta.iter().copied().collect::<Vec<_>>().join(", ")
        ));
    }
    let mut f = Finding::new(format, class, what);
    f.details = details;
    f.facts = json!({
        "entries": { "expected": ea.len(), "actual": eb.len() },
        "added": added,
        "removed": removed,
        "content_differs": explained,
        "content_differs_count": content.len(),
        "timestamps_differ": times.len(),
        "other_metadata": other_meta.iter().collect::<Vec<_>>(),
        "order_differs": reordered,
    });
    Ok(f)
}

/// Every differing entry's summary line, each followed by as many of its
/// detail lines as fit ([`ENTRY_LINES`] per entry, [`ENTRIES_LINES`] in
/// all). A cut is said, with the number of lines left out, and never falls
/// right after a heading such as `actual:` (which would then stand empty).
fn layout(blocks: Vec<(String, Vec<String>)>) -> Vec<String> {
    let mut out = Vec::new();
    let mut budget = ENTRIES_LINES;
    for (head, sub) in blocks {
        out.push(head);
        let room = sub.len().min(ENTRY_LINES).min(budget);
        let mut keep = if room < sub.len() {
            room.saturating_sub(1)
        } else {
            sub.len()
        };
        while keep > 0 && keep < sub.len() && sub[keep - 1].ends_with(':') {
            keep -= 1;
        }
        out.extend(sub[..keep].iter().map(|l| format!("  {l}")));
        let mut used = keep;
        if keep < sub.len() {
            out.push(format!("  ... {} more lines", sub.len() - keep));
            used += 1;
        }
        budget = budget.saturating_sub(used);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_are_counted_and_never_leave_a_heading_alone() {
        let dump: Vec<String> = ["expected:", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8"]
            .iter()
            .chain(&["e9", "actual:", "a1", "a2", "a3"])
            .map(|s| s.to_string())
            .collect();
        let out = layout(vec![("entry `x`: 2 bytes differ".into(), dump.clone())]);
        // 12 lines fit: 11 kept and a count, but line 11 is `actual:`, so
        // the cut moves before it.
        assert_eq!(out.len(), 12);
        assert_eq!(out[10], "  e9");
        assert_eq!(out[11], "  ... 4 more lines");
        // Many entries: every summary line is there, the details run out.
        let blocks: Vec<(String, Vec<String>)> = (0..6)
            .map(|i| (format!("entry `{i}`: differs"), dump.clone()))
            .collect();
        let out = layout(blocks);
        for i in 0..6 {
            assert!(out.contains(&format!("entry `{i}`: differs")), "{out:#?}");
        }
        let mores: usize = out
            .iter()
            .filter_map(|l| l.strip_prefix("  ... "))
            .map(|l| {
                l.trim_end_matches(" more lines")
                    .parse::<usize>()
                    .expect("count")
            })
            .sum();
        let shown = out.len() - 6 - out.iter().filter(|l| l.starts_with("  ... ")).count();
        assert_eq!(shown + mores, 6 * dump.len());
        assert!(
            !out.iter().any(|l| l.trim_end().ends_with("actual:")),
            "{out:#?}"
        );
    }

    #[test]
    fn extra_fields_with_only_time_blocks_count_as_timestamps() {
        let a = [0x55, 0x54, 5, 0, 1, 1, 2, 3, 4];
        let b = [0x55, 0x54, 5, 0, 1, 9, 9, 9, 9];
        assert!(extra_differs_only_in_time(&a, &b));
        let c = [0x75, 0x78, 1, 0, 1];
        let d = [0x75, 0x78, 1, 0, 2];
        assert!(!extra_differs_only_in_time(&c, &d));
    }
}
