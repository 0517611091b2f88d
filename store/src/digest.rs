//! Typed SHA-256 digests.
//!
//! Every digest prints as `sha256:<64 hex digits>`. Each kind of object has
//! its own type so that a step key cannot be passed where a blob digest is
//! expected; they convert into one another only through [`Hash`](struct@Hash).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A raw SHA-256 hash with no meaning attached.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash(pub [u8; 32]);

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{input}` is not a digest: {why}\nhint: digests are written `sha256:` followed by 64 lowercase hex digits")]
pub struct ParseDigestError {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Hash {
    /// Hash a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        Hash(Sha256::digest(bytes).into())
    }

    /// Hash everything `r` yields, streaming; returns the hash and byte count.
    pub fn of_reader(mut r: impl std::io::Read) -> std::io::Result<(Self, u64)> {
        let mut hasher = Sha256::new();
        let n = std::io::copy(&mut r, &mut hasher)?;
        Ok((Hash(hasher.finalize().into()), n))
    }

    /// Lowercase hex, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        self.write_hex(&mut [0; 64]).to_string()
    }

    /// The lowercase hex digits, written into `buf` (no allocation: keys,
    /// records and paths print digests by the tens of thousands).
    fn write_hex<'b>(&self, buf: &'b mut [u8; 64]) -> &'b str {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in self.0.iter().enumerate() {
            buf[2 * i] = DIGITS[usize::from(b >> 4)];
            buf[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        // Only ASCII digits and letters were written.
        std::str::from_utf8(buf).unwrap_or_default()
    }

    /// Parse 64 hex digits (no prefix).
    pub fn from_hex(s: &str) -> Result<Self, ParseDigestError> {
        if s.len() != 64 {
            return Err(ParseDigestError {
                input: s.to_string(),
                why: "expected 64 hex digits",
            });
        }
        if s.bytes()
            .any(|b| !(b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            return Err(ParseDigestError {
                input: s.to_string(),
                why: "expected lowercase hex digits",
            });
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseDigestError {
            input: s.to_string(),
            why: "expected 64 hex digits",
        })?;
        Ok(Hash(out))
    }

    /// A short form for humans: the first 12 hex digits.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        f.write_str(self.write_hex(&mut [0; 64]))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl FromStr for Hash {
    type Err = ParseDigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("sha256:") {
            Some(hex) => Hash::from_hex(hex),
            None => Err(ParseDigestError {
                input: s.to_string(),
                why: "missing the `sha256:` prefix",
            }),
        }
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

macro_rules! typed_digest {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Hash);

        impl $name {
            /// The digest of this kind whose hash is `h`: say what a hash
            /// is the digest of once, where it is known.
            pub const fn from_hash(h: Hash) -> Self {
                $name(h)
            }
            /// The underlying hash.
            pub fn hash(&self) -> Hash {
                self.0
            }
            /// Lowercase hex, without the prefix.
            pub fn hex(&self) -> String {
                self.0.hex()
            }
            /// The first 12 hex digits.
            pub fn short(&self) -> String {
                self.0.short()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = ParseDigestError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok($name(s.parse()?))
            }
        }
    };
}

typed_digest!(
    /// The digest of a blob's bytes (a file, a log, a JSON document).
    BlobDigest
);
typed_digest!(
    /// The digest of a tree object: the Merkle manifest of a directory.
    TreeDigest
);
typed_digest!(
    /// The digest of everything that can change a step's output.
    StepKey
);
typed_digest!(
    /// The digest of a signed build record (a DSSE envelope blob).
    RecordDigest
);
typed_digest!(
    /// The digest of an OCI image manifest.
    ImageDigest
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_text() {
        let h = Hash::of(b"abc");
        assert_eq!(
            h.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.to_string().parse::<Hash>().unwrap(), h);
        assert_eq!(Hash::of_reader(&b"abc"[..]).unwrap(), (h, 3));
        assert!("ba7816bf"
            .parse::<Hash>()
            .unwrap_err()
            .to_string()
            .contains("missing the `sha256:` prefix"));
        assert!("sha256:zz".parse::<Hash>().is_err());
        let upper = format!("sha256:{}", h.hex().to_uppercase());
        assert!(upper.parse::<Hash>().is_err());
    }

    #[test]
    fn typed_digests_serialize_as_text() {
        let d = BlobDigest::from_hash(Hash::of(b""));
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        let back: BlobDigest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
    }
}
