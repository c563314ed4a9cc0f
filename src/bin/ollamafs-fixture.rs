//! Builds the test fixture store (for `scripts/bench`). Test support, not part of the
//! product: built only with `--features fixture`.

use std::path::PathBuf;

use clap::Parser;

/// Build a realistic Ollama store in DIR: GGUF headers, licenses, namespaces, another host,
/// a shared base model and a large weights blob.
#[derive(Parser)]
struct Args {
    dir: PathBuf,
    /// Size of the shared llama weights blob (sparse unless --dense)
    #[arg(long, default_value_t = 256 << 20)]
    big_size: u64,
    /// Fill the big weights with data instead of a hole
    #[arg(long)]
    dense: bool,
    /// Also add this many small models (5 unique blobs each, configs shared)
    #[arg(long, default_value_t = 0)]
    many: usize,
}

fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let info = ollamafs::fixture::build_with(&a.dir, a.big_size, a.dense)?;
    ollamafs::fixture::add_many(&a.dir, a.many, 6)?;
    for m in info.models {
        println!("{}", m.display_shortest());
    }
    Ok(())
}
