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

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, as
/// psql's `\password` computes it), so that `ALTER ROLE … PASSWORD` carries this and not
/// the password: statement texts reach pg_stat_statements, pg_stat_activity and the log.
/// Our passwords are hex, so SASLprep leaves them as they are.
pub fn scram_verifier(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    scram_verifier_with(password, &salt, 4096)
}

fn scram_verifier_with(password: &str, salt: &[u8], iterations: u32) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let hmac = |key: &[u8], data: &[u8]| -> [u8; 32] {
        let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        m.update(data);
        m.finalize().into_bytes().into()
    };
    // Hi() of RFC 5802: PBKDF2 with HMAC-SHA-256, one block.
    let mut u = hmac(password.as_bytes(), &[salt, &1u32.to_be_bytes()].concat());
    let mut salted = u;
    for _ in 1..iterations {
        u = hmac(password.as_bytes(), &u);
        salted.iter_mut().zip(u).for_each(|(s, x)| *s ^= x);
    }
    let stored_key: [u8; 32] = Sha256::digest(hmac(&salted, b"Client Key")).into();
    let server_key = hmac(&salted, b"Server Key");
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("SCRAM-SHA-256${iterations}:{}${}:{}", b64.encode(salt), b64.encode(stored_key), b64.encode(server_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_has_postgres_layout_and_never_the_password() {
        let v = scram_verifier("0123456789abcdef0123456789abcdef");
        let (head, keys) = v.split_once('$').unwrap().1.split_once('$').unwrap();
        let (iterations, salt) = head.split_once(':').unwrap();
        assert_eq!(iterations, "4096");
        assert_eq!(salt.len(), 24, "16 bytes of salt in base64");
        assert_eq!(keys.split(':').count(), 2);
        assert!(!v.contains("0123456789abcdef"));
        assert_ne!(v, scram_verifier("0123456789abcdef0123456789abcdef"), "a new salt each time");
        assert_eq!(scram_verifier_with("pencil", b"salt", 2), scram_verifier_with("pencil", b"salt", 2), "deterministic for one salt");
    }
}
