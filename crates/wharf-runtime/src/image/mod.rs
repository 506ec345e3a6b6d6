//! OCI images as root filesystems: `image = "oci:PATH[:TAG]"` in a process spec names an
//! OCI image layout directory (or a tar of one, as `skopeo copy ... oci-archive:` or
//! `podman save --format oci-archive` write). At deploy its layers are unpacked once
//! into `DATA/images/layers/sha256-HEX` (content-addressed, shared by every app and
//! release that uses them) and the release records them; the sandbox stacks them with
//! overlayfs as the replica's `/`.
//!
//! Invariants: every blob read is checked against its digest; a layer directory exists
//! under its final name only once completely unpacked (unpacked beside it, then
//! renamed); an archive is unpacked once per content (`DATA/images/archives/sha256-HEX`).

pub mod oci;
mod unpack;

use crate::layout::Layout;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use wharf_types::spec::Image;

#[derive(Debug, thiserror::Error)]
#[error("image {reference}: {message}")]
pub struct ImageError {
    pub reference: String,
    pub message: String,
}

/// `oci:PATH[:TAG]` -> (PATH, TAG). A last `:` part without `/` is a tag unless the
/// whole text names an existing path.
pub fn parse_reference<'a>(reference: &'a str, base: &Path) -> Option<(PathBuf, Option<&'a str>)> {
    let rest = reference.strip_prefix("oci:")?;
    if rest.is_empty() {
        return None;
    }
    let at = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    if let Some((path, tag)) = rest.rsplit_once(':') {
        if !tag.contains('/') && !tag.is_empty() && !path.is_empty() && !at(rest).exists() {
            return Some((at(path), Some(tag)));
        }
    }
    Some((at(rest), None))
}

/// The sha256 of `bytes`, in hex.
fn hex(bytes: &[u8]) -> String {
    crate::hex(&Sha256::digest(bytes))
}

/// Resolves `image.reference` (relative to `base`, the app directory) and unpacks what
/// is missing; fills in its digest, layers and environment.
pub fn resolve(layout: &Layout, reference: &str, base: &Path) -> Result<Image, ImageError> {
    let fail = |message: String| ImageError {
        reference: reference.to_string(),
        message,
    };
    let (path, tag) = parse_reference(reference, base)
        .ok_or_else(|| fail("write it as oci:PATH or oci:PATH:TAG".into()))?;
    let root = if path.is_file() {
        archive(layout, &path).map_err(fail)?
    } else if path.is_dir() {
        path.clone()
    } else {
        return Err(fail(format!(
            "{} does not exist; give an OCI image layout directory or its tar",
            path.display()
        )));
    };
    if !root.join("oci-layout").is_file() {
        return Err(fail(format!(
            "{} is not an OCI image layout (no oci-layout file); export one with `skopeo copy docker://IMAGE oci:DIR:TAG`",
            path.display()
        )));
    }
    let index: oci::Index = read_json(&root.join("index.json")).map_err(fail)?;
    let platform = oci::this_platform();
    let mut chosen = oci::choose(&index, tag, &platform).map_err(fail)?.clone();
    // An image index (multi-platform) leads to the manifest for this machine.
    for _ in 0..4 {
        if oci::kind(&chosen) != oci::Kind::Index {
            break;
        }
        let nested: oci::Index = blob_json(&root, &chosen.digest).map_err(fail)?;
        chosen = oci::choose(&nested, None, &platform).map_err(fail)?.clone();
    }
    let manifest: oci::Manifest = blob_json(&root, &chosen.digest).map_err(fail)?;
    let config: oci::Config = blob_json(&root, &manifest.config.digest).map_err(fail)?;
    let store = layout.images().join("layers");
    std::fs::create_dir_all(&store)
        .map_err(|e| fail(format!("cannot create {}: {e}", store.display())))?;
    let mut layers = Vec::new();
    for l in &manifest.layers {
        let hex = oci::sha256_hex(&l.digest).map_err(fail)?;
        let compression = oci::compression(&l.media_type).map_err(fail)?;
        let dest = store.join(format!("sha256-{hex}"));
        if !dest.is_dir() {
            let tmp = store.join(format!(".tmp-{hex}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp)
                .map_err(|e| fail(format!("cannot create {}: {e}", tmp.display())))?;
            let unpacked =
                unpack::unpack(&blob_path(&root, hex), hex, compression, &tmp).and_then(|()| {
                    std::fs::rename(&tmp, &dest)
                        .map_err(|e| format!("cannot store layer {hex}: {e}"))
                });
            if let Err(e) = unpacked {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(fail(e));
            }
        }
        layers.push(hex.to_string());
    }
    Ok(Image {
        reference: reference.to_string(),
        digest: chosen.digest.clone(),
        layers,
        env: config.env(),
    })
}

/// The directories of `image`'s layers, top first (overlayfs `lowerdir` order).
pub fn layer_dirs(layout: &Layout, image: &Image) -> Vec<PathBuf> {
    image
        .layers
        .iter()
        .rev()
        .map(|hex| layout.images().join("layers").join(format!("sha256-{hex}")))
        .collect()
}

fn blob_path(root: &Path, hex: &str) -> PathBuf {
    root.join("blobs").join("sha256").join(hex)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("cannot parse {}: {e}", path.display()))
}

/// A JSON blob, checked against its digest.
fn blob_json<T: serde::de::DeserializeOwned>(root: &Path, digest: &str) -> Result<T, String> {
    let want = oci::sha256_hex(digest)?;
    let path = blob_path(root, want);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if hex(&bytes) != want {
        return Err(format!(
            "{} does not match its digest; the image is corrupt",
            path.display()
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("cannot parse {}: {e}", path.display()))
}

/// Unpacks an image layout archive (a plain tar) once per content.
fn archive(layout: &Layout, file: &Path) -> Result<PathBuf, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let dest = layout
        .images()
        .join("archives")
        .join(format!("sha256-{}", hex(&bytes)));
    if dest.is_dir() {
        return Ok(dest);
    }
    let tmp = dest.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let unpacked = tar::Archive::new(bytes.as_slice())
        .unpack(&tmp)
        .map_err(|e| {
            format!(
                "{} is not a tar of an OCI image layout: {e}",
                file.display()
            )
        })
        .and_then(|()| {
            std::fs::rename(&tmp, &dest).map_err(|e| format!("cannot store the archive: {e}"))
        });
    if let Err(e) = unpacked {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    Ok(dest)
}

#[cfg(test)]
mod tests;
