//! The library behind `cargo xtask`. One module per concern, in layers that only point down:
//! see `src/contributing/architecture.md`.

pub mod analysis;
pub mod bench;
pub mod book;
pub mod cache;
pub mod cmd;
pub mod compose;
pub mod contain;
pub mod diagnostics;
pub mod extract;
pub mod flags;
pub mod images;
pub mod lint;
pub mod nginx;
pub mod outer_proxy;
pub mod pgcheck;
pub mod preprocess;
pub mod pristine;
pub mod route;
pub mod secrets;
pub mod setup;
pub mod site;
pub mod stack;
pub mod synapse;
pub mod tools;
pub mod tree;
pub mod workflows;
pub mod yaml;

use std::path::PathBuf;

/// The repository root (where the workspace Cargo.toml and book.toml live).
pub fn project_root() -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}
