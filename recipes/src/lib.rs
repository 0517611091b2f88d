//! repro-recipes
