//! ollamafs: an Ollama model store as a filesystem, and the engine behind it.
//!
//! Layers, from the bottom: [`name`] (Ollama's name grammar), [`store`] (manifests,
//! blobs, ingest, copy, delete, prune; no FUSE), [`layout`] (layer → file name),
//! [`fs`] (the filesystem's meaning, testable without a kernel), [`fuse`] (a thin
//! `fuser` adapter), [`api`] (Ollama's model-management HTTP API over the same
//! engine) and [`cli`].

pub mod api;
pub mod catalog;
pub mod cli;
/// Test support (a realistic Ollama store); not part of the product build.
#[cfg(any(test, feature = "fixture"))]
pub mod fixture;
pub mod format;
pub mod fs;
pub mod fuse;
pub mod gguf;
pub mod hf_cache;
pub mod layout;
pub mod modelfile;
pub mod mount;
pub mod name;
pub mod registry;
pub mod store;
pub mod store_arg;
pub mod sync;
pub mod views;
