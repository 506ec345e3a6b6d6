//! Writing small OCI image layouts for the tests: layers of files, symlinks and
//! whiteouts, gzipped, with an image config holding an environment.

use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// One entry of a layer.
pub enum Entry<'a> {
    File {
        path: &'a str,
        data: &'a [u8],
        mode: u32,
    },
    Symlink {
        path: &'a str,
        to: &'a str,
    },
    /// An OCI whiteout hiding `path` of the layers below.
    Whiteout {
        path: &'a str,
    },
}

fn digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn put_blob(root: &Path, bytes: &[u8]) -> String {
    let d = digest(bytes);
    let dir = root.join("blobs/sha256");
    std::fs::create_dir_all(&dir).expect("blobs dir");
    std::fs::write(dir.join(&d["sha256:".len()..]), bytes).expect("blob");
    d
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn layer(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            Entry::File { path, data, mode } => {
                let mut h = header(data.len() as u64, *mode, tar::EntryType::Regular);
                tar.append_data(&mut h, path, *data).expect("file entry");
            }
            Entry::Symlink { path, to } => {
                let mut h = header(0, 0o777, tar::EntryType::Symlink);
                tar.append_link(&mut h, path, to).expect("symlink entry");
            }
            Entry::Whiteout { path } => {
                let p = Path::new(path);
                let name = format!(".wh.{}", p.file_name().unwrap().to_string_lossy());
                let wh = p.parent().unwrap_or(Path::new("")).join(name);
                let mut h = header(0, 0o644, tar::EntryType::Regular);
                tar.append_data(&mut h, wh, &[][..])
                    .expect("whiteout entry");
            }
        }
    }
    let raw = tar.into_inner().expect("tar");
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).expect("gzip");
    gz.finish().expect("gzip")
}

/// Writes an image layout at `root` with `layers` (bottom first) and `env`, tagged
/// `tag`.
pub fn write_layout(root: &Path, layers: &[Vec<Entry<'_>>], env: &[&str], tag: &str) {
    std::fs::create_dir_all(root).expect("layout dir");
    std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    let descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|entries| {
            let bytes = layer(entries);
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": put_blob(root, &bytes),
                "size": bytes.len(),
            })
        })
        .collect();
    let config =
        serde_json::json!({"architecture": "amd64", "os": "linux", "config": {"Env": env}});
    let config = config.to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": put_blob(root, config.as_bytes()),
            "size": config.len(),
        },
        "layers": descs,
    })
    .to_string();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put_blob(root, manifest.as_bytes()),
        "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }]});
    std::fs::write(root.join("index.json"), index.to_string()).expect("index.json");
}
