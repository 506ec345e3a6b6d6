//! Master keys: loading them from the environment or a 0600 key file, writing the file.

use super::crypto::{from_hex, random_bytes, to_hex};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use wharf_core::ports::VaultError;

/// Where the keys came from (decides whether rotation can persist a new one).
pub(crate) enum KeySource {
    Env,
    File(PathBuf),
}

#[derive(Clone)]
pub(crate) struct MasterKey {
    /// Fingerprint: the first 16 hex digits of SHA-256("wharf-master-key" || key).
    pub id: String,
    pub key: [u8; 32],
}

impl MasterKey {
    fn new(key: [u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"wharf-master-key");
        h.update(key);
        let id = to_hex(&h.finalize()[..8]);
        Self { id, key }
    }
    pub fn random() -> Result<Self, String> {
        random_bytes().map(Self::new)
    }
}

/// A new random master key in the format `$WHARF_MASTER_KEY` and the key file use.
pub fn generate_hex_key() -> Result<String, String> {
    random_bytes().map(|b| to_hex(&b))
}

fn parse(text: &str, origin: &str) -> Result<Vec<MasterKey>, VaultError> {
    let mut keys = Vec::new();
    for (i, item) in text.split(['\n', ',']).map(str::trim).enumerate() {
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        let key: [u8; 32] = from_hex(item)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                VaultError::Key(format!(
                    "{origin}: entry {} is not a 256-bit key in hex (64 hex digits); generate one with `openssl rand -hex 32`",
                    i + 1
                ))
            })?;
        keys.push(MasterKey::new(key));
    }
    if keys.is_empty() {
        return Err(VaultError::Key(format!("{origin} holds no key")));
    }
    Ok(keys)
}

pub(crate) fn load(
    env: Option<&str>,
    file: &Path,
) -> Result<(KeySource, Vec<MasterKey>), VaultError> {
    if let Some(v) = env {
        return Ok((KeySource::Env, parse(v, "$WHARF_MASTER_KEY")?));
    }
    let origin = file.display().to_string();
    if !file.exists() {
        let key = MasterKey::random().map_err(VaultError::Key)?;
        write(file, std::slice::from_ref(&key))?;
        return Ok((KeySource::File(file.to_path_buf()), vec![key]));
    }
    let meta = std::fs::metadata(file)
        .map_err(|e| VaultError::Key(format!("cannot read {origin}: {e}")))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(VaultError::Key(format!(
            "{origin} has mode {mode:o}, readable by others; run `chmod 600 {origin}`"
        )));
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| VaultError::Key(format!("cannot read {origin}: {e}")))?;
    Ok((KeySource::File(file.to_path_buf()), parse(&text, &origin)?))
}

/// Writes `keys` (current first) to `path` atomically, mode 0600, synced to disk.
pub(crate) fn write(path: &Path, keys: &[MasterKey]) -> Result<(), VaultError> {
    let fail = |e: std::io::Error| VaultError::Key(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    let mut text =
        String::from("# wharf master keys: current first. Keep this file secret and backed up.\n");
    for k in keys {
        text.push_str(&to_hex(&k.key));
        text.push('\n');
    }
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
