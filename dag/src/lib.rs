//! repro-dag
