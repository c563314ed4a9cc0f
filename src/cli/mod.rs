//! The `ollamafs` command line.

mod import;
mod show;
use import::{create, import, import_from_hf_cache};
mod lmstudio;
pub use show::human_time;
use show::{ls, show, show_modelfile};

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::format::human_bytes;
use crate::name::Name;
use crate::store::{Store, StoreError, verify};
use crate::store_arg::{StoreArg, store_dir};

#[derive(Parser, Debug)]
#[command(
    name = "ollamafs",
    version,
    about = "An Ollama model store as a filesystem: models are folders, layers are files"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount the store as a filesystem
    Mount(crate::mount::MountArgs),
    /// List models, like `ollama list`
    Ls {
        #[command(flatten)]
        store: StoreArg,
        /// Only names starting with this (ignoring case)
        prefix: Option<String>,
    },
    /// Copy a model (a new manifest over the same blobs), like `ollama cp`
    Cp {
        #[command(flatten)]
        store: StoreArg,
        source: String,
        destination: String,
    },
    /// Delete models and the blobs no other model uses, like `ollama rm`
    Rm {
        #[command(flatten)]
        store: StoreArg,
        /// Keep blobs even when no model uses them any more
        #[arg(long)]
        no_prune: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show a model's layers and details
    Show {
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Print a Modelfile (as `ollama show --modelfile`), which `create` takes back
        #[arg(long, conflicts_with = "json")]
        modelfile: bool,
        name: String,
    },
    /// Download a model from its OCI registry (host/namespace/model:tag)
    Pull {
        #[command(flatten)]
        store: StoreArg,
        /// Plain HTTP (a registry without TLS, as `ollama pull --insecure`)
        #[arg(long)]
        insecure: bool,
        /// For hf.co/ORG/REPO:QUANT: a Hugging Face cache that may hold the file already
        /// (default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub); when
        /// it does, the model is made from it, linked, with no download
        #[arg(long, value_name = "DIR")]
        hf_cache: Option<PathBuf>,
        name: String,
    },
    /// Upload a model to its OCI registry (host/namespace/model:tag)
    Push {
        #[command(flatten)]
        store: StoreArg,
        /// Plain HTTP (a registry without TLS, as `ollama push --insecure`)
        #[arg(long)]
        insecure: bool,
        name: String,
    },
    /// Create a model from a Modelfile (FROM a model or a GGUF file, SYSTEM, TEMPLATE, …)
    Create {
        #[command(flatten)]
        store: StoreArg,
        name: String,
        /// The Modelfile
        #[arg(short = 'f', long = "file", default_value = "Modelfile")]
        file: PathBuf,
    },
    /// Make models of GGUF files on this machine without copying their data where the disk
    /// allows: a reflink (btrfs, XFS), a hard link with --link, else a copy
    Import {
        #[command(flatten)]
        store: StoreArg,
        /// The model's name (one file only); else from the file name (`x-Q4_K_M.gguf` is `x:q4_k_m`)
        #[arg(long)]
        name: Option<String>,
        /// Hard-link files that cannot be reflinked (same disk): no copy, but a tool that
        /// later changes such a file in place changes the model too (`verify` reports it)
        #[arg(long)]
        link: bool,
        /// A GGUF of the Hugging Face cache (ORG/REPO, or ORG/REPO:QUANT to pick a file):
        /// the model `hf.co/ORG/REPO:QUANT`, its blob hard-linked from the cache
        #[arg(long, value_name = "ORG/REPO[:QUANT]", conflicts_with = "paths")]
        hf: Option<String>,
        /// The Hugging Face cache (default: $HF_HUB_CACHE, else $HF_HOME/hub, else
        /// ~/.cache/huggingface/hub)
        #[arg(long, value_name = "DIR")]
        hf_cache: Option<PathBuf>,
        /// An LM Studio models folder (PUBLISHER/MODEL/FILE.gguf; default: ~/.lmstudio/models
        /// and ~/.cache/lm-studio/models, those that exist): every GGUF there becomes
        /// hf.co/PUBLISHER/MODEL:QUANT, reflinked or hard-linked (no copy on the same disk)
        #[arg(long, value_name = "DIR", num_args = 0..=1, conflicts_with_all = ["paths", "hf", "name"])]
        lmstudio: Option<Option<PathBuf>>,
        /// With --lmstudio: list what would be imported, change nothing
        #[arg(long, requires = "lmstudio")]
        dry_run: bool,
        #[arg(required_unless_present_any = ["hf", "lmstudio"])]
        paths: Vec<PathBuf>,
    },
    /// Serve Ollama's model-management API over the store: tags, show, copy, delete, create,
    /// pull, push, blobs (HEAD and upload), version and ps
    Serve {
        #[command(flatten)]
        store: StoreArg,
        /// Address to listen on (default: $OLLAMA_HOST, else 127.0.0.1:11434)
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Keep blobs that no model uses any more
        #[arg(long)]
        no_prune: bool,
        /// More log output (repeat for debug)
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
    },
    /// Hash every blob and check every manifest; report blobs nothing uses (orphans)
    Verify {
        #[command(flatten)]
        store: StoreArg,
        /// Remove the orphan blobs found (not while another tool is pulling into the store)
        #[arg(long)]
        prune: bool,
    },
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Mount(_) | Command::Serve { .. }) {
        // A command whose output goes into a closed pipe (`ollamafs show --json x | head`)
        // ends quietly, as coreutils do, instead of panicking on EPIPE. The daemons keep
        // ignoring SIGPIPE: a client that hangs up must not kill them.
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let res: Result<(), CliError> = match cli.command {
        Command::Mount(args) => crate::mount::mount_command(args).map_err(Into::into),
        other => run(other).map_err(Into::into),
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e}");
            e.exit_code()
        }
    }
}

fn open(arg: &StoreArg) -> Result<Store, StoreError> {
    Store::open(store_dir(&arg.store))
}

/// For the commands that bring models in (`pull`, `create`, `serve`): a store folder that
/// does not exist yet is made, as Ollama makes `~/.ollama/models` on first use.
fn open_or_make(arg: &StoreArg) -> Result<Store, StoreError> {
    let dir = store_dir(&arg.store);
    if !dir.exists() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("store folder {}: {e}", dir.display())))?;
    }
    Store::open(dir)
}

/// A command's failure: what the store said, or why a mount did not start.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mount(#[from] crate::mount::MountError),
}

impl CliError {
    /// Exit status: 2 for bad usage or an invalid name, 1 for everything else.
    fn exit_code(&self) -> i32 {
        use crate::mount::MountError;
        match self {
            CliError::Store(e) => store_exit_code(e),
            CliError::Mount(MountError::Usage(_)) => 2,
            CliError::Mount(MountError::Store(e)) => store_exit_code(e),
            CliError::Mount(_) => 1,
        }
    }
}

pub fn store_exit_code(e: &StoreError) -> i32 {
    match e {
        StoreError::InvalidSource(_) | StoreError::InvalidDestination(_) | StoreError::InvalidName(_) => 2,
        _ => 1,
    }
}

fn run(cmd: Command) -> Result<(), StoreError> {
    match cmd {
        Command::Mount(args) => crate::mount::mount_command(args).map_err(|e| match e {
            crate::mount::MountError::Store(e) => e,
            e => StoreError::Invalid(e.to_string()),
        }),
        Command::Ls { store, prefix } => ls(&open(&store)?, prefix.as_deref()),
        Command::Cp { store, source, destination } => {
            let s = open(&store)?;
            s.prepare_for_writes()?;
            s.copy(&source, &destination)?;
            println!("copied '{source}' to '{destination}'");
            Ok(())
        }
        Command::Rm { store, no_prune, names } => {
            let s = open(&store)?;
            s.prepare_for_writes()?;
            let mut first_err = None;
            for n in names {
                match s.delete(&n, no_prune) {
                    Ok(_) => println!("deleted '{n}'"),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        first_err.get_or_insert(e);
                    }
                }
            }
            match first_err {
                // Already printed; keep the status.
                Some(e) => std::process::exit(store_exit_code(&e)),
                None => Ok(()),
            }
        }
        Command::Show { store, modelfile: true, name, .. } => show_modelfile(open(&store)?, &name),
        Command::Show { store, json, name, .. } => show(&open(&store)?, &name, json),
        Command::Create { store, name, file } => create(open_or_make(&store)?, &name, &file),
        Command::Import { store, lmstudio: Some(dir), dry_run, .. } => {
            lmstudio::import_lmstudio(open_or_make(&store)?, dir.as_deref(), dry_run)
        }
        Command::Import { store, name, hf: Some(repo), hf_cache, .. } => {
            import_from_hf_cache(open_or_make(&store)?, &repo, name.as_deref(), hf_cache.as_deref())
        }
        Command::Import { store, name, link, paths, .. } => {
            import(open_or_make(&store)?, name.as_deref(), link, &paths)
        }
        Command::Pull { store, insecure, hf_cache, name } => {
            let s = open_or_make(&store)?;
            match import::hf_cache_source(&name, hf_cache.as_deref()) {
                Some((spec, model)) => import_from_hf_cache(s, &spec, Some(&model), hf_cache.as_deref()),
                None => transfer(s, &name, insecure, true),
            }
        }
        Command::Push { store, insecure, name } => transfer(open(&store)?, &name, insecure, false),
        Command::Serve { store, listen, no_prune, verbose } => serve_api(&store, listen.as_deref(), no_prune, verbose),
        Command::Verify { store, prune } => {
            let s = open(&store)?;
            let report = run_verify(&s);
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            let orphan_bytes: u64 = report.orphans.iter().map(|(_, n)| n).sum();
            if prune && !report.orphans.is_empty() {
                let removed = verify::prune_orphans(&s, &report.orphans);
                println!("pruned {} orphan blob(s)", removed.len());
            } else {
                for (d, n) in &report.orphans {
                    eprintln!(
                        "orphan: blobs/{} ({}): no manifest, trash item or running mount uses it",
                        d.blob_file_name(),
                        human_bytes(*n as i64)
                    );
                }
                if !report.orphans.is_empty() {
                    eprintln!(
                        "{} orphan blob(s), {}: `ollamafs verify --prune` removes them",
                        report.orphans.len(),
                        human_bytes(orphan_bytes as i64)
                    );
                }
            }
            for p in &report.problems {
                eprintln!("problem: {p}");
            }
            println!(
                "checked {} blobs ({}) and {} manifests: {}",
                report.blobs,
                human_bytes(report.bytes as i64),
                report.manifests,
                if report.is_clean() { "ok".to_string() } else { format!("{} problems", report.problems.len()) }
            );
            if report.is_clean() { Ok(()) } else { std::process::exit(1) }
        }
    }
}

/// `ollamafs serve`: the API in the foreground until SIGINT or SIGTERM.
fn serve_api(store: &StoreArg, listen: Option<&str>, no_prune: bool, verbose: u8) -> Result<(), StoreError> {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    let _ = simplelog::TermLogger::init(
        level,
        simplelog::Config::default(),
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Never,
    );
    let s = std::sync::Arc::new(open_or_make(store)?);
    s.prepare_for_writes()?;
    let addr = crate::api::listen_addr(listen);
    let listener = crate::api::bind(&addr)?;
    let shown = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
    // The first line is for people and for scripts that asked for port 0.
    println!("Listening on {shown} (ollamafs {}, store {})", env!("CARGO_PKG_VERSION"), s.root().display());
    let _ = std::io::stdout().flush();
    let catalog = std::sync::Arc::new(crate::api::StoreCatalog::new(s.clone(), no_prune));
    crate::api::run(listener, catalog, stop_signal())?;
    log::info!("stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM (must be polled inside the API's runtime).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn run_verify(s: &Store) -> verify::Report {
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(verify::blob_bytes(s));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let r = verify::verify(s, |n| bar.inc(n));
        bar.finish_and_clear();
        r
    } else {
        verify::verify(s, |_| {})
    }
}

/// `ollamafs pull` / `ollamafs push`: progress as lines (a bar per blob on a terminal).
fn transfer(s: Store, raw: &str, insecure: bool, pull: bool) -> Result<(), StoreError> {
    use crate::registry::Progress;
    let name = Name::parse(raw).map_err(|_| StoreError::InvalidName(crate::name::InvalidName(raw.to_string())))?;
    s.prepare_for_writes()?;
    let name = if pull { name } else { s.resolve(raw)? };
    let tty = std::io::stderr().is_terminal();
    let bars = indicatif::MultiProgress::new();
    let mut current: Option<(crate::store::Digest, indicatif::ProgressBar)> = None;
    let mut report = |p: Progress| match p {
        Progress::Status(s) => {
            if let Some((_, b)) = current.take() {
                b.finish();
            }
            println!("{s}");
        }
        // As Ollama says for a layer the other side already has.
        Progress::Exists(d, total) => {
            if let Some((_, b)) = current.take() {
                b.finish();
            }
            println!("exists {} {total} bytes", &d.hex()[..12]);
        }
        Progress::Blob(d, done, total) => {
            let short = &d.hex()[..12];
            if !tty {
                if done == total {
                    println!("{} {short} {total} bytes", if pull { "pulling" } else { "pushed" });
                }
                return;
            }
            if current.as_ref().is_none_or(|(cd, _)| *cd != d) {
                if let Some((_, b)) = current.take() {
                    b.finish();
                }
                let b = bars.add(indicatif::ProgressBar::new(total));
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b.set_message(format!("{} {short}", if pull { "pulling" } else { "pushing" }));
                current = Some((d, b));
            }
            if let Some((_, b)) = &current {
                b.set_position(done);
            }
        }
    };
    let moved = match pull {
        true => crate::registry::pull(&s, &name, insecure, &mut report, &mut |n, b| s.write_manifest(n, &b))?,
        false => crate::registry::push(&s, &name, insecure, &mut report)?,
    };
    eprintln!("{} bytes downloaded, {} bytes uploaded", moved.downloaded, moved.uploaded);
    Ok(())
}
