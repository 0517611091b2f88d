//! Governance: the model registry (stages and owners), registered
//! identities with roles, signed approvals, the promotion policy, promotion
//! and rollback.
//!
//! Everything lives in the store, beside the records it is about:
//!
//! | path (under `v1/`) | what |
//! | --- | --- |
//! | `refs/stages/<stage>/<name>/<version>` | stage membership; content: the record digest (`repro gc` keeps staged versions) |
//! | `registry/<name>/history.jsonl` | every promotion, emergency promotion, demotion and rollback of a model, one JSON object a line |
//! | `identities/<keyid hex>.json` | a registered identity: key, name, e-mail, roles, revocation |
//! | `refs/approvals/<record hex>/<approval hex>` | a signed approval (see [`approvals`]) |
//! | `policy.toml` | the default policy (see [`policy`]) |
//!
//! Every change appends an entry to the audit log ([`repro_evidence::audit`]).
//! [`status`] reads all of it back as one overview per model (`repro status`).

mod base;

pub mod admin;
pub mod approvals;
pub mod asof;
pub mod card;
pub mod chain;
pub mod fsck;
pub mod gc;
pub mod identities;
pub mod lineage;
pub mod policy;
pub mod promote;
pub mod registry;
pub mod status;

pub use base::{Error, Result, Stage};
