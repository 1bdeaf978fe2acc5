//! Generated passwords, kept in files of mode 0600 in a 0700 directory, never printed.

use std::path::Path;

use anyhow::{Context, Result};
use rand::RngCore;

/// The secret `name` under `dir`, generated on first use.
pub fn get_or_create(dir: &Path, name: &str) -> Result<String> {
    let path = dir.join(name);
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    // Steps that run in parallel may ask for the same secret: write a private temporary
    // file and link it into place, which fails if another step got there first; then
    // everyone uses the one that is there.
    let tmp = dir.join(format!(".{name}.{}.{:x}", std::process::id(), rand::rng().next_u64()));
    crate::fsutil::write_atomic(&tmp, secret.as_bytes(), 0o600)?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(secret),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?.trim().to_string())
        }
        Err(e) => Err(e).with_context(|| format!("writing {}", path.display())),
    }
}
