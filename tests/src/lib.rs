//! Support code for the end-to-end tests of the `repro` binary.
