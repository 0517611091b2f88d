//! Element-wise comparison of NumPy-style numeric buffers: counts of
//! differing elements, largest absolute and relative differences, ULP
//! distances.

use serde_json::json;

use crate::common::{finite_or_null, fmax, Class};

/// How the elements of a buffer are numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Float,
    /// bfloat16: the upper half of a float32.
    BFloat,
    Int,
    Uint,
    Bool,
}

/// A numeric NumPy dtype (`<f8`, `>i4`, `|b1`, ...). Complex types are read
/// as pairs of floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dtype {
    pub(crate) kind: Kind,
    /// Bytes per scalar (per component for complex).
    pub(crate) size: usize,
    pub(crate) big_endian: bool,
}

impl Dtype {
    /// Parses a NumPy type string such as `<f8`, `|u1`, `>c16` or `f4`
    /// (native order, taken as little endian); `None` for types that are not
    /// plain numbers (strings, objects, structured records).
    pub(crate) fn parse(descr: &str) -> Option<Dtype> {
        let (big_endian, rest) = match descr.as_bytes().first()? {
            b'<' | b'=' | b'|' => (false, &descr[1..]),
            b'>' | b'!' => (true, &descr[1..]),
            _ => (false, descr),
        };
        let mut chars = rest.chars();
        let code = chars.next()?;
        let digits = chars.as_str();
        // Datetimes carry a unit suffix: `M8[ns]`.
        let digits = digits.split('[').next().unwrap_or(digits);
        let size: usize = digits.parse().ok()?;
        let (kind, size) = match (code, size) {
            ('f', 2 | 4 | 8) => (Kind::Float, size),
            ('c', 8 | 16) => (Kind::Float, size / 2),
            ('i' | 'M' | 'm', 1 | 2 | 4 | 8) => (Kind::Int, size),
            ('u', 1 | 2 | 4 | 8) => (Kind::Uint, size),
            ('b', 1) => (Kind::Bool, 1),
            _ => return None,
        };
        Some(Dtype {
            kind,
            size,
            big_endian,
        })
    }

    /// bfloat16, which NumPy has no type string for.
    pub(crate) const BFLOAT16: Dtype = Dtype {
        kind: Kind::BFloat,
        size: 2,
        big_endian: false,
    };

    fn read_u64(&self, b: &[u8]) -> u64 {
        let mut v = 0u64;
        if self.big_endian {
            for &x in b {
                v = (v << 8) | u64::from(x);
            }
        } else {
            for &x in b.iter().rev() {
                v = (v << 8) | u64::from(x);
            }
        }
        v
    }

    /// The element in `b` (`size` bytes) as a number.
    pub(crate) fn number(&self, b: &[u8]) -> f64 {
        self.value(b).0
    }

    /// The element as a number, and for floats its position on the ordered
    /// integer line used for ULP distances.
    fn value(&self, b: &[u8]) -> (f64, Option<i128>) {
        let bits = self.read_u64(b);
        match (self.kind, self.size) {
            (Kind::Float, 8) => {
                let x = f64::from_bits(bits);
                (x, Some(ordered(bits, 63)))
            }
            (Kind::Float, 4) => (
                f64::from(f32::from_bits(bits as u32)),
                Some(ordered(bits, 31)),
            ),
            (Kind::Float, _) => (f16_to_f64(bits as u16), Some(ordered(bits, 15))),
            (Kind::BFloat, _) => (
                f64::from(f32::from_bits((bits as u32) << 16)),
                Some(ordered(bits, 15)),
            ),
            (Kind::Int, n) => {
                let shift = 64 - 8 * n as u32;
                (((bits << shift) as i64 >> shift) as f64, None)
            }
            (Kind::Uint, _) => (bits as f64, None),
            (Kind::Bool, _) => (if bits != 0 { 1.0 } else { 0.0 }, None),
        }
    }
}

/// Maps float bits onto a line where adjacent floats are adjacent integers.
fn ordered(bits: u64, sign_bit: u32) -> i128 {
    let magnitude = i128::from(bits & ((1u64 << sign_bit) - 1));
    if bits >> sign_bit & 1 == 1 {
        -magnitude
    } else {
        magnitude
    }
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f64::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// One differing element.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) index: u64,
    pub(crate) a: f64,
    pub(crate) b: f64,
}

/// What an element-wise comparison found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stats {
    pub(crate) total: u64,
    pub(crate) differing: u64,
    pub(crate) max_abs: f64,
    pub(crate) max_rel: f64,
    /// Largest ULP distance, for floats.
    pub(crate) max_ulp: Option<u128>,
    /// Elements that are NaN on one side only.
    pub(crate) nan_mismatch: u64,
    /// The first few differing elements.
    pub(crate) samples: Vec<Sample>,
}

const SAMPLES: usize = 5;

impl Stats {
    /// Records one pair of numbers known to differ (as bytes or values).
    pub(crate) fn add(&mut self, index: u64, a: f64, b: f64, ulp: Option<u128>) {
        self.differing += 1;
        if self.samples.len() < SAMPLES {
            self.samples.push(Sample { index, a, b });
        }
        if a.is_nan() != b.is_nan() {
            self.nan_mismatch += 1;
            return;
        }
        if a.is_nan() {
            return;
        }
        let abs = if a == b { 0.0 } else { (a - b).abs() };
        let scale = a.abs().max(b.abs());
        let rel = if abs == 0.0 { 0.0 } else { abs / scale };
        self.max_abs = fmax(self.max_abs, abs);
        self.max_rel = fmax(self.max_rel, rel);
        if let Some(u) = ulp {
            self.max_ulp = Some(self.max_ulp.unwrap_or(0).max(u));
        }
    }

    /// Folds another comparison into this one (indices of samples are kept).
    pub(crate) fn merge(&mut self, other: &Stats) {
        self.total += other.total;
        self.differing += other.differing;
        self.max_abs = fmax(self.max_abs, other.max_abs);
        self.max_rel = fmax(self.max_rel, other.max_rel);
        self.max_ulp = match (self.max_ulp, other.max_ulp) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
        self.nan_mismatch += other.nan_mismatch;
        for s in &other.samples {
            if self.samples.len() < SAMPLES {
                self.samples.push(s.clone());
            }
        }
    }

    /// `Numeric` with the magnitudes, or `Identical` when nothing differs.
    pub(crate) fn class(&self) -> Class {
        if self.differing == 0 {
            Class::Identical
        } else {
            Class::Numeric {
                max_abs: self.max_abs,
                max_rel: self.max_rel,
            }
        }
    }

    /// `12 of 4096 elements differ, max abs 3.1e-7, max rel 2.4e-6, max 3 ULP`.
    pub(crate) fn describe(&self, noun: &str) -> String {
        format!(
            "{} of {} {noun} differ, {}",
            self.differing,
            self.total,
            self.magnitudes()
        )
    }

    /// `max abs 3.1e-7, max rel 2.4e-6, max 3 ULP` (and NaNs on one side).
    pub(crate) fn magnitudes(&self) -> String {
        let mut s = format!(
            "max abs {}, max rel {}",
            fmt_num(self.max_abs),
            fmt_sci(self.max_rel)
        );
        if let Some(u) = self.max_ulp {
            s.push_str(&format!(", max {u} ULP"));
        }
        if self.nan_mismatch > 0 {
            s.push_str(&format!(", {} NaN on one side only", self.nan_mismatch));
        }
        s
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({
            "total": self.total,
            "differing": self.differing,
            "max_abs": finite_or_null(self.max_abs),
            "max_rel": finite_or_null(self.max_rel),
            "max_ulp": self.max_ulp.map(|u| u.to_string()),
            "nan_mismatch": self.nan_mismatch,
            "samples": self.samples.iter().map(|s| json!({
                "index": s.index,
                "expected": finite_or_null(s.a),
                "actual": finite_or_null(s.b),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Formats a magnitude: small integers plainly, everything else as `3.1e-7`.
pub(crate) fn fmt_num(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e6 {
        format!("{x:.0}")
    } else {
        fmt_sci(x)
    }
}

/// Formats a magnitude as `3.1e-7` (`0` for zero).
pub(crate) fn fmt_sci(x: f64) -> String {
    if x == 0.0 {
        "0".to_string()
    } else {
        format!("{x:.1e}")
    }
}

/// Compares two buffers of the same dtype element by element. `stride` is
/// the distance between elements (the dtype size for plain arrays, the
/// record size for a field of a structured array), `offset` where the first
/// element starts. Buffers of different lengths are compared over the
/// shorter one.
pub(crate) fn compare(dtype: Dtype, a: &[u8], b: &[u8], offset: usize, stride: usize) -> Stats {
    let size = dtype.size;
    let stride = stride.max(size);
    let n = a.len().min(b.len());
    let mut stats = Stats::default();
    let mut pos = offset;
    let mut index = 0u64;
    // Offsets and strides come from the file: nothing here may overflow.
    while let Some(end) = pos.checked_add(size).filter(|&end| end <= n) {
        let (ea, eb) = (&a[pos..end], &b[pos..end]);
        stats.total += 1;
        if ea != eb {
            let (va, oa) = dtype.value(ea);
            let (vb, ob) = dtype.value(eb);
            let ulp = match (oa, ob) {
                (Some(x), Some(y)) if !va.is_nan() && !vb.is_nan() => Some(x.abs_diff(y)),
                _ => None,
            };
            stats.add(index, va, vb, ulp);
        }
        let Some(next) = pos.checked_add(stride) else {
            break;
        };
        pos = next;
        index += 1;
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dtypes() {
        let f8 = Dtype::parse("<f8").expect("f8");
        assert_eq!((f8.kind, f8.size, f8.big_endian), (Kind::Float, 8, false));
        let i4 = Dtype::parse(">i4").expect("i4");
        assert_eq!((i4.kind, i4.size, i4.big_endian), (Kind::Int, 4, true));
        assert_eq!(Dtype::parse("|b1").map(|d| d.kind), Some(Kind::Bool));
        assert_eq!(Dtype::parse("<c16").map(|d| d.size), Some(8));
        assert_eq!(Dtype::parse("<M8[ns]").map(|d| d.kind), Some(Kind::Int));
        assert!(Dtype::parse("|V48").is_none());
        assert!(Dtype::parse("|O").is_none());
        assert!(Dtype::parse("<U5").is_none());
    }

    #[test]
    fn counts_ulps_and_magnitudes() {
        let a: Vec<u8> = [1.0f64, 2.0, 3.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let mut b = a.clone();
        let bumped = f64::from_bits(2.0f64.to_bits() + 3);
        b[8..16].copy_from_slice(&bumped.to_le_bytes());
        let s = compare(Dtype::parse("<f8").expect("dtype"), &a, &b, 0, 8);
        assert_eq!((s.total, s.differing, s.max_ulp), (3, 1, Some(3)));
        assert!((s.max_abs - (bumped - 2.0)).abs() < 1e-30);
        assert!(s
            .describe("elements")
            .starts_with("1 of 3 elements differ, max abs 1.3e-15"));
    }

    #[test]
    fn ulp_crosses_zero_and_reads_big_endian_ints() {
        let pos = f32::from_bits(1);
        let neg = -f32::from_bits(1);
        let s = compare(
            Dtype::parse(">f4").expect("dtype"),
            &pos.to_be_bytes(),
            &neg.to_be_bytes(),
            0,
            4,
        );
        assert_eq!(s.max_ulp, Some(2));
        let s = compare(
            Dtype::parse(">i2").expect("dtype"),
            &(-5i16).to_be_bytes(),
            &7i16.to_be_bytes(),
            0,
            2,
        );
        assert_eq!(s.max_abs, 12.0);
    }

    #[test]
    fn offsets_and_strides_near_the_end_of_memory_stop_the_comparison() {
        let f8 = Dtype::parse("<f8").expect("dtype");
        let (a, b) = ([0u8; 16], [1u8; 16]);
        assert_eq!(compare(f8, &a, &b, usize::MAX, 8).total, 0);
        assert_eq!(compare(f8, &a, &b, usize::MAX - 3, 8).total, 0);
        assert_eq!(compare(f8, &a, &b, 0, usize::MAX).total, 1);
    }

    #[test]
    fn half_floats_decode() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert!(f16_to_f64(0x7e00).is_nan());
    }

    #[test]
    fn bfloat16_reads_the_upper_half_of_a_float32() {
        let one = (1.0f32.to_bits() >> 16) as u16;
        let a = one.to_le_bytes();
        let b = (one + 2).to_le_bytes();
        let s = compare(Dtype::BFLOAT16, &a, &b, 0, 2);
        assert_eq!((s.differing, s.max_ulp), (1, Some(2)));
        // bfloat16 has 7 fraction bits: 2 ULP above 1.0 is 1 + 2/128.
        assert_eq!(s.max_abs, 2.0 / 128.0);
    }

    #[test]
    fn nan_on_one_side_is_counted_not_measured() {
        let a = 1.0f64.to_le_bytes();
        let b = f64::NAN.to_le_bytes();
        let s = compare(Dtype::parse("<f8").expect("dtype"), &a, &b, 0, 8);
        assert_eq!((s.differing, s.nan_mismatch, s.max_abs), (1, 1, 0.0));
    }
}
