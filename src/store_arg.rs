//! Where the store is: `--store`, else `OLLAMA_MODELS`, else `~/.ollama/models`. Shared by
//! the CLI and the mount's arguments.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct StoreArg {
    /// The Ollama models folder (default: $OLLAMA_MODELS, else ~/.ollama/models)
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

/// `--store`, else `OLLAMA_MODELS` (trimmed of whitespace and quotes, as Ollama does),
/// else `~/.ollama/models`.
pub fn store_dir(arg: &Option<PathBuf>) -> PathBuf {
    if let Some(p) = arg {
        return p.clone();
    }
    if let Ok(v) = std::env::var("OLLAMA_MODELS") {
        let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
        if !v.is_empty() {
            return PathBuf::from(v);
        }
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".ollama").join("models")
}
