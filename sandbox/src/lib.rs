//! repro-sandbox
