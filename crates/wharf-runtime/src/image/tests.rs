use super::*;
use crate::image::unpack::tests::layer;

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Writes `bytes` as a blob of the layout at `root`; returns its digest.
fn blob(root: &Path, bytes: &[u8]) -> String {
    let h = hex(bytes);
    let dir = root.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&h), bytes).unwrap();
    format!("sha256:{h}")
}

/// An image layout with `layers` (each a list of files) and `env`, tagged `tag`.
fn image_layout(root: &Path, layers: &[&[(&str, &[u8])]], env: &[&str], tag: &str) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|files| {
            let (bytes, _) = layer(files);
            let digest = blob(root, &bytes);
            serde_json::json!({"mediaType": GZIP_LAYER, "digest": digest, "size": bytes.len()})
        })
        .collect();
    let config =
        serde_json::json!({"architecture": "amd64", "os": "linux", "config": {"Env": env}});
    let config_digest = blob(root, config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest},
        "layers": descs,
    });
    let manifest_digest = blob(root, manifest.to_string().as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": MANIFEST_TYPE, "digest": manifest_digest,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(root.join("index.json"), index.to_string()).unwrap();
}

#[test]
fn references() {
    let base = Path::new("/apps/shop");
    assert_eq!(
        parse_reference("oci:img", base),
        Some((PathBuf::from("/apps/shop/img"), None))
    );
    assert_eq!(
        parse_reference("oci:/images/node:20", base),
        Some((PathBuf::from("/images/node"), Some("20")))
    );
    assert_eq!(
        parse_reference("oci:../a/b.tar", base),
        Some((PathBuf::from("/apps/shop/../a/b.tar"), None))
    );
    assert_eq!(parse_reference("docker:node", base), None);
    assert_eq!(parse_reference("oci:", base), None);
}

#[test]
fn a_layout_resolves_to_unpacked_layers_once() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().join("data"));
    let app = dir.path().join("app");
    image_layout(
        &app.join("img"),
        &[&[("etc/os-release", b"base")], &[("bin/tool", b"tool")]],
        &["PATH=/bin", "MODE=image"],
        "v1",
    );
    let image = resolve(&layout, "oci:img:v1", &app).unwrap();
    assert_eq!(image.reference, "oci:img:v1");
    assert!(image.digest.starts_with("sha256:"));
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.env, ["PATH=/bin", "MODE=image"]);
    let dirs = layer_dirs(&layout, &image);
    assert_eq!(
        std::fs::read(dirs[0].join("bin/tool")).unwrap(),
        b"tool",
        "top first"
    );
    assert_eq!(
        std::fs::read(dirs[1].join("etc/os-release")).unwrap(),
        b"base"
    );
    // Again: the layers are there already; the same answer.
    assert_eq!(resolve(&layout, "oci:img:v1", &app).unwrap(), image);
    // Untagged: the only image.
    assert_eq!(
        resolve(&layout, "oci:img", &app).unwrap().layers,
        image.layers
    );
}

#[test]
fn an_archive_of_a_layout_resolves_too() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().join("data"));
    let src = dir.path().join("img");
    image_layout(&src, &[&[("hello", b"hi")]], &[], "latest");
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_dir_all(".", &src).unwrap();
    std::fs::write(dir.path().join("img.tar"), tar.into_inner().unwrap()).unwrap();
    let image = resolve(&layout, "oci:img.tar:latest", dir.path()).unwrap();
    let dirs = layer_dirs(&layout, &image);
    assert_eq!(std::fs::read(dirs[0].join("hello")).unwrap(), b"hi");
}

#[test]
fn bad_images_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().join("data"));
    let err = |r: &str| resolve(&layout, r, dir.path()).unwrap_err().to_string();
    assert!(
        err("oci:missing").contains("does not exist"),
        "{}",
        err("oci:missing")
    );
    assert!(err("node:20").contains("oci:PATH"));
    std::fs::create_dir(dir.path().join("plain")).unwrap();
    assert!(err("oci:plain").contains("not an OCI image layout"));
    image_layout(&dir.path().join("img"), &[&[("a", b"a")]], &[], "v1");
    assert!(err("oci:img:v2").contains("no image is tagged \"v2\"; tags: v1"));
    // A layer blob that does not match its digest is refused, and nothing is kept.
    let blobs = dir.path().join("img/blobs/sha256");
    let index: oci::Index = read_json(&dir.path().join("img/index.json")).unwrap();
    let manifest: oci::Manifest =
        blob_json(&dir.path().join("img"), &index.manifests[0].digest).unwrap();
    let layer_hex = oci::sha256_hex(&manifest.layers[0].digest)
        .unwrap()
        .to_string();
    let (other, _) = layer(&[("a", b"tampered")]);
    std::fs::write(blobs.join(&layer_hex), other).unwrap();
    let e = err("oci:img:v1");
    assert!(e.contains("does not match its digest"), "{e}");
    let kept: Vec<_> = std::fs::read_dir(layout.images().join("layers"))
        .unwrap()
        .flatten()
        .collect();
    assert!(kept.is_empty(), "{kept:?}");
}
