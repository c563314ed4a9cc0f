//! Thin `fuser` adapter (in progress).
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct MountArgs {
    #[command(flatten)]
    pub store: crate::cli::StoreArg,
    pub mountpoint: PathBuf,
}

pub fn mount_command(_a: MountArgs) -> Result<(), crate::store::StoreError> {
    Err(crate::store::StoreError::Invalid(
        "mount is not built yet".into(),
    ))
}
