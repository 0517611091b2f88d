//! CSV and TSV tables: header changes, rows added, removed or changed,
//! columns with differences, and whether only row order differs.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde_json::json;
use similar::{capture_diff_slices_deadline, Algorithm, DiffOp};

use crate::common::{clip, Class, Finding, Format, STRUCTURE_LIMIT};
use crate::error::{side, Error, Result};
use crate::numeric::Stats;
use crate::text::DIFF_TIMEOUT;

/// Changed, added or removed rows listed in the details.
const ROWS_SHOWN: usize = 10;

type Row = Vec<String>;

fn read(d: &[u8], delimiter: u8, i: usize) -> Result<Vec<Row>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(d);
    let mut rows = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|source| Error::Csv {
            side: side(i),
            source,
        })?;
        rows.push(rec.iter().map(str::to_string).collect());
    }
    Ok(rows)
}

fn show_row(r: &[String]) -> String {
    clip(&r.join(","), 80)
}

/// Compares two CSV (or, for `.tsv`, tab-separated) tables. The first row
/// is taken as the header.
pub(crate) fn explain(path: &str, a: &[u8], b: &[u8]) -> Result<Finding> {
    if a.len() > STRUCTURE_LIMIT || b.len() > STRUCTURE_LIMIT {
        return Err(Error::TooLarge {
            limit: STRUCTURE_LIMIT,
        });
    }
    let delimiter = if path.to_ascii_lowercase().ends_with(".tsv") {
        b'\t'
    } else {
        b','
    };
    let ra = read(a, delimiter, 0)?;
    let rb = read(b, delimiter, 1)?;
    let empty = Vec::new();
    let (ha, hb) = (ra.first().unwrap_or(&empty), rb.first().unwrap_or(&empty));
    let (ba, bb) = (ra.get(1..).unwrap_or(&[]), rb.get(1..).unwrap_or(&[]));

    if ra == rb {
        return Ok(Finding::new(
            Format::Csv,
            Class::MetadataOnly,
            "CSV formatting (quoting or line endings)",
        ));
    }
    let mut details = Vec::new();
    let header_changed = ha != hb;
    if header_changed {
        let mut sa = ha.clone();
        let mut sb = hb.clone();
        sa.sort();
        sb.sort();
        if sa == sb {
            let same_rows = {
                let order = column_order(ha, hb);
                let mut x: Vec<Row> = ba.iter().map(|r| reorder(r, &order)).collect();
                let mut y: Vec<Row> = bb.to_vec();
                x.sort();
                y.sort();
                x == y
            };
            if same_rows {
                let mut f = Finding::new(Format::Csv, Class::OrderOnly, "column order");
                f.details
                    .push(format!("header: {} vs {}", show_row(ha), show_row(hb)));
                return Ok(f);
            }
        }
        details.push(format!("header: {} vs {}", show_row(ha), show_row(hb)));
    }
    if !header_changed && ba.len() == bb.len() {
        let mut sa = ba.to_vec();
        let mut sb = bb.to_vec();
        sa.sort();
        sb.sort();
        if sa == sb {
            let moved = ba.iter().zip(bb).filter(|(x, y)| x != y).count();
            let mut f = Finding::new(Format::Csv, Class::OrderOnly, "row order");
            f.details.push(format!(
                "same {} rows, {moved} in another position",
                ba.len()
            ));
            f.facts = json!({ "rows": ba.len(), "moved": moved });
            return Ok(f);
        }
    }

    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changed: Vec<(usize, usize)> = Vec::new();
    let deadline = Instant::now() + DIFF_TIMEOUT;
    for op in capture_diff_slices_deadline(Algorithm::Myers, ba, bb, Some(deadline)) {
        match op {
            DiffOp::Equal { .. } => {}
            DiffOp::Delete {
                old_index, old_len, ..
            } => removed.extend(old_index..old_index + old_len),
            DiffOp::Insert {
                new_index, new_len, ..
            } => added.extend(new_index..new_index + new_len),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                let paired = old_len.min(new_len);
                changed.extend((0..paired).map(|k| (old_index + k, new_index + k)));
                removed.extend(old_index + paired..old_index + old_len);
                added.extend(new_index + paired..new_index + new_len);
            }
        }
    }

    let name = |h: &Row, c: usize| h.get(c).cloned().unwrap_or_else(|| format!("#{}", c + 1));
    let mut columns: BTreeMap<usize, usize> = BTreeMap::new();
    let mut stats = Stats::default();
    let mut non_numeric = 0usize;
    for &(i, j) in &changed {
        let (x, y) = (&ba[i], &bb[j]);
        for c in 0..x.len().max(y.len()) {
            let (p, q) = (x.get(c), y.get(c));
            stats.total += 1;
            if p == q {
                continue;
            }
            *columns.entry(c).or_default() += 1;
            match (
                p.map(|s| s.trim().parse::<f64>()),
                q.map(|s| s.trim().parse::<f64>()),
            ) {
                (Some(Ok(u)), Some(Ok(v))) => stats.add(stats.total - 1, u, v, None),
                _ => non_numeric += 1,
            }
        }
    }
    // Row numbers count the header as row 1, as a spreadsheet would.
    for &(i, j) in changed.iter().take(ROWS_SHOWN) {
        let cells: Vec<String> = (0..ba[i].len().max(bb[j].len()))
            .filter(|&c| ba[i].get(c) != bb[j].get(c))
            .map(|c| {
                let get = |r: &Row| r.get(c).map(String::as_str).unwrap_or("").to_string();
                format!(
                    "{}: {} vs {}",
                    name(ha, c),
                    clip(&get(&ba[i]), 30),
                    clip(&get(&bb[j]), 30)
                )
            })
            .collect();
        details.push(format!("row {} changed: {}", i + 2, cells.join("; ")));
    }
    for &i in removed.iter().take(ROWS_SHOWN) {
        details.push(format!("row {} removed: {}", i + 2, show_row(&ba[i])));
    }
    for &j in added.iter().take(ROWS_SHOWN) {
        details.push(format!("row {} added: {}", j + 2, show_row(&bb[j])));
    }
    let column_names: Vec<String> = columns.keys().map(|&c| name(ha, c)).collect();
    if !column_names.is_empty() {
        details.insert(
            usize::from(header_changed),
            format!("columns with differences: {}", column_names.join(", ")),
        );
    }

    let (class, what) =
        if !header_changed && added.is_empty() && removed.is_empty() && non_numeric == 0 {
            (
                stats.class(),
                format!(
                    "{} in {} rows, columns {}",
                    stats.describe("cells"),
                    changed.len(),
                    column_names.join(", ")
                ),
            )
        } else {
            let mut parts = Vec::new();
            if header_changed {
                parts.push("header changed".to_string());
            }
            for (n, verb) in [
                (changed.len(), "changed"),
                (added.len(), "added"),
                (removed.len(), "removed"),
            ] {
                if n > 0 {
                    parts.push(format!("{n} rows {verb}"));
                }
            }
            (Class::Unknown, parts.join(", "))
        };
    let mut f = Finding::new(Format::Csv, class, what);
    f.details = details;
    f.facts = json!({
        "header_changed": header_changed,
        "rows": { "expected": ba.len(), "actual": bb.len() },
        "changed_rows": changed.iter().map(|(i, _)| i + 2).take(100).collect::<Vec<_>>(),
        "added_rows": added.iter().map(|j| j + 2).take(100).collect::<Vec<_>>(),
        "removed_rows": removed.iter().map(|i| i + 2).take(100).collect::<Vec<_>>(),
        "columns": column_names,
        "cells": stats.to_json(),
    });
    Ok(f)
}

/// For each column of header `to`, its position in header `from` (the first
/// column of that name), found through an index rather than a search per
/// column: a header can have a hundred thousand columns.
fn column_order(from: &[String], to: &[String]) -> Vec<Option<usize>> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(from.len());
    for (c, h) in from.iter().enumerate() {
        index.entry(h.as_str()).or_insert(c);
    }
    to.iter().map(|h| index.get(h.as_str()).copied()).collect()
}

/// `row` with its cells in the order [`column_order`] gives.
fn reorder(row: &[String], order: &[Option<usize>]) -> Row {
    order
        .iter()
        .map(|c| c.and_then(|c| row.get(c)).cloned().unwrap_or_default())
        .collect()
}
