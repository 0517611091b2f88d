//! Step keys: the digest of everything that can change a step's output.

use std::collections::BTreeMap;

use repro_store::{Hash, ImageDigest, StepKey, TreeDigest};
use serde::Serialize;

/// Everything that goes into a step key. Two steps with equal material
/// produce equal outputs (if they are deterministic), so a key found in the
/// action cache lets the runner skip the step.
///
/// The step's name is deliberately not part of the key: renaming a step does
/// not change what it computes. Resource limits are not part of it either:
/// they decide whether a step finishes, not what it writes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyMaterial {
    /// The sandbox contract version (mount points, fixed environment, user).
    pub policy_version: u32,
    /// The image the step runs in.
    pub image: ImageDigest,
    /// The command, after parameter substitution.
    pub argv: Vec<String>,
    /// The whole environment the step sees.
    pub env: BTreeMap<String, String>,
    /// Each input's mount name and tree.
    pub inputs: BTreeMap<String, TreeDigest>,
    /// The declared outputs, as written.
    pub outputs: Vec<String>,
}

/// The same material as [`KeyMaterial`], borrowed: computing a key then
/// copies nothing (a no-op build computes one per step). Serializes to the
/// very same JSON (same field names, same order, same types).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct KeyMaterialRef<'a> {
    /// See [`KeyMaterial::policy_version`].
    pub policy_version: u32,
    /// See [`KeyMaterial::image`].
    pub image: &'a ImageDigest,
    /// See [`KeyMaterial::argv`].
    pub argv: &'a [String],
    /// See [`KeyMaterial::env`].
    pub env: &'a BTreeMap<String, String>,
    /// See [`KeyMaterial::inputs`].
    pub inputs: &'a BTreeMap<String, TreeDigest>,
    /// See [`KeyMaterial::outputs`].
    pub outputs: &'a [String],
}

impl KeyMaterialRef<'_> {
    /// The canonical bytes hashed into the key: a domain tag, then compact JSON
    /// with map keys sorted (they are `BTreeMap`s and struct fields have a fixed order).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"repro step key v1\n");
        // Serializing these plain types into memory cannot fail.
        let _ = serde_json::to_writer(&mut out, self);
        out
    }

    /// The step key.
    pub fn key(&self) -> StepKey {
        StepKey::from_hash(Hash::of(&self.canonical_bytes()))
    }
}

impl KeyMaterial {
    /// The material, borrowed.
    pub fn as_ref(&self) -> KeyMaterialRef<'_> {
        KeyMaterialRef {
            policy_version: self.policy_version,
            image: &self.image,
            argv: &self.argv,
            env: &self.env,
            inputs: &self.inputs,
            outputs: &self.outputs,
        }
    }

    /// The canonical bytes hashed into the key (see
    /// [`KeyMaterialRef::canonical_bytes`]).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        self.as_ref().canonical_bytes()
    }

    /// The step key.
    pub fn key(&self) -> StepKey {
        self.as_ref().key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material() -> KeyMaterial {
        KeyMaterial {
            policy_version: 1,
            image: ImageDigest::from_hash(Hash::of(b"image")),
            argv: vec!["python3".into(), "train.py".into()],
            env: BTreeMap::from([("TZ".into(), "UTC".into())]),
            inputs: BTreeMap::from([("data".into(), TreeDigest::from_hash(Hash::of(b"tree")))]),
            outputs: vec!["model.pkl".into()],
        }
    }

    #[test]
    fn every_field_changes_the_key() {
        let base = material().key();
        let mut m = material();
        m.policy_version = 2;
        assert_ne!(m.key(), base);
        let mut m = material();
        m.image = ImageDigest::from_hash(Hash::of(b"other"));
        assert_ne!(m.key(), base);
        let mut m = material();
        m.argv.push("--seed=1".into());
        assert_ne!(m.key(), base);
        let mut m = material();
        m.env.insert("OMP_NUM_THREADS".into(), "2".into());
        assert_ne!(m.key(), base);
        let mut m = material();
        m.inputs
            .insert("data".into(), TreeDigest::from_hash(Hash::of(b"tree2")));
        assert_ne!(m.key(), base);
        let mut m = material();
        m.outputs.push("extra".into());
        assert_ne!(m.key(), base);
        assert_eq!(material().key(), base);
    }

    /// Keys must never change by accident: every cache and record holds
    /// them. This pins the canonical bytes of one material.
    #[test]
    fn canonical_bytes_are_stable() {
        let text = String::from_utf8(material().canonical_bytes()).unwrap();
        let want = format!(
            "repro step key v1\n{{\"policy_version\":1,\"image\":\"{}\",\"argv\":[\"python3\",\"train.py\"],\"env\":{{\"TZ\":\"UTC\"}},\"inputs\":{{\"data\":\"{}\"}},\"outputs\":[\"model.pkl\"]}}",
            ImageDigest::from_hash(Hash::of(b"image")),
            TreeDigest::from_hash(Hash::of(b"tree")),
        );
        assert_eq!(text, want);
        // The owned material serializes the same way (as keys were first made).
        let owned = serde_json::to_string(&material()).unwrap();
        assert_eq!(text, format!("repro step key v1\n{owned}"));
    }

    #[test]
    fn argv_boundaries_are_unambiguous() {
        let mut a = material();
        a.argv = vec!["ab".into(), "c".into()];
        let mut b = material();
        b.argv = vec!["a".into(), "bc".into()];
        assert_ne!(a.key(), b.key());
    }
}
