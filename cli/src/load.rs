//! Turning `--level`, `--manifest`, `-f` and `--set` into a validated manifest, with every
//! problem reported at once.

use std::fmt;
use std::path::PathBuf;

use clap::Args;
use scalectl_core::levels;
use scalectl_core::{Diagnostic, Manifest, Sources};

/// Where a manifest comes from.
#[derive(Debug, Clone, Default, Args)]
pub struct ManifestArgs {
    /// Level 1-6: use the built-in environments/level-N.yaml.
    #[arg(long, short = 'l', value_parser = clap::value_parser!(u8).range(1..=6))]
    pub level: Option<u8>,
    /// A whole manifest file to use instead of a built-in level.
    #[arg(long, value_name = "FILE", conflicts_with = "level")]
    pub manifest: Option<PathBuf>,
    /// Overlay file merged over the manifest (repeatable; later ones win).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub overlays: Vec<PathBuf>,
    /// Override one key, such as spec.shop.workers=3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl ManifestArgs {
    /// Whether the user asked for a manifest at all (otherwise a recorded one is reused).
    pub fn given(&self) -> bool {
        self.level.is_some() || self.manifest.is_some() || !self.overlays.is_empty() || !self.sets.is_empty()
    }
}

/// A manifest that did not validate: every problem, each located.
#[derive(Debug)]
pub struct Invalid(pub Vec<Diagnostic>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "the manifest has {n} problem{}:", if n == 1 { "" } else { "s" })?;
        for d in &self.0 {
            writeln!(f, "  {d}")?;
        }
        write!(f, "nothing was changed; fix these and run the command again")
    }
}

impl std::error::Error for Invalid {}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// Loads the manifest; `fallback_level` is used when neither `--level` nor `--manifest`
/// is given (the environment's recorded level, say).
pub fn load(args: &ManifestArgs, fallback_level: Option<u8>) -> anyhow::Result<Manifest> {
    let mut sources = match (&args.manifest, args.level.or(fallback_level)) {
        (Some(path), _) => Sources::new(&path.display().to_string(), &read(path)?),
        (None, Some(n)) => {
            let l = levels::level(n).ok_or_else(|| anyhow::anyhow!("there is no level {n}; levels are 1 to 6"))?;
            Sources::new(l.file, l.manifest)
        }
        (None, None) => anyhow::bail!("say which level to use with --level N (1-6), or give a manifest with --manifest FILE"),
    };
    for path in &args.overlays {
        sources.overlay(&path.display().to_string(), &read(path)?);
    }
    for s in &args.sets {
        sources.set(s);
    }
    sources.load().map_err(|d| Invalid(d).into())
}

/// Validates one whole manifest file.
pub fn load_file(path: &PathBuf) -> anyhow::Result<Result<Manifest, Vec<Diagnostic>>> {
    Ok(Sources::new(&path.display().to_string(), &read(path)?).load())
}
