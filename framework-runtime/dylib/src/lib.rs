//! Ovation and everything it depends on, as one shared library.
//!
//! Linking an app's binary statically takes most of an incremental rebuild: the linker reads
//! the framework, Tokio, sqlx, hyper and the rest every time. An app built with this crate
//! links against one shared library instead, built once. `ovation run` turns it on for an app
//! whose manifest has it as an optional dependency:
//!
//! ```toml
//! [dependencies]
//! ovation-dylib = { version = "0.1", optional = true }
//! ```
//!
//! and `ovation::main!()` links it when the feature is on. A release build, a test, or
//! `ovation deploy` never turns it on: those binaries stand alone.

pub use ovation;
