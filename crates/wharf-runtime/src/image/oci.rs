//! The OCI image layout, as data: `index.json`, image indexes, manifests and the image
//! config, and the choice of one image for this machine. Pure: the caller reads blobs.
//!
//! See the OCI image spec (image-layout, image-index, manifest, config). Only what a
//! root filesystem needs is read: the layers (bottom first) and the config's `Env`.

use serde::Deserialize;

pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker's media types, which OCI layouts written by some tools still carry.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The annotation naming a manifest in `index.json` (the tag).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A content descriptor.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

/// `index.json` or an image index blob.
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The parts of the image config that matter here.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Config {
    #[serde(default)]
    pub config: Option<ExecConfig>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct ExecConfig {
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
}

impl Config {
    /// `KEY=VALUE` entries of the image's environment.
    pub fn env(&self) -> Vec<String> {
        self.config
            .as_ref()
            .and_then(|c| c.env.clone())
            .unwrap_or_default()
    }
}

/// This machine's platform in OCI terms.
pub fn this_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    Platform {
        architecture: architecture.to_string(),
        os: "linux".to_string(),
    }
}

/// What a descriptor points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Index,
    Manifest,
    Other,
}

pub fn kind(d: &Descriptor) -> Kind {
    match d.media_type.as_str() {
        INDEX | DOCKER_LIST => Kind::Index,
        MANIFEST | DOCKER_MANIFEST => Kind::Manifest,
        _ => Kind::Other,
    }
}

/// Picks the entry of `index` to follow: the one named `reference` (its ref-name
/// annotation) when given, else the only entry, else the one for `platform`.
pub fn choose<'a>(
    index: &'a Index,
    reference: Option<&str>,
    platform: &Platform,
) -> Result<&'a Descriptor, String> {
    let candidates: Vec<&Descriptor> = match reference {
        Some(r) => index
            .manifests
            .iter()
            .filter(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(r))
            .collect(),
        None => index.manifests.iter().collect(),
    };
    if candidates.is_empty() {
        let names: Vec<&str> = index
            .manifests
            .iter()
            .filter_map(|d| d.annotations.get(REF_NAME).map(String::as_str))
            .collect();
        return Err(match reference {
            Some(r) if names.is_empty() => {
                format!("no image is tagged {r:?} (the layout has no tags; drop \":{r}\")")
            }
            Some(r) => format!("no image is tagged {r:?}; tags: {}", names.join(", ")),
            None => "the index lists no image".to_string(),
        });
    }
    if candidates.len() == 1 {
        return Ok(candidates[0]);
    }
    candidates
        .iter()
        .copied()
        .find(|d| d.platform.as_ref() == Some(platform))
        .ok_or_else(|| {
            format!(
                "{} images and none for {}/{}; name one with oci:PATH:TAG",
                candidates.len(),
                platform.os,
                platform.architecture
            )
        })
}

/// `sha256:HEX` -> `HEX`, checked.
pub fn sha256_hex(digest: &str) -> Result<&str, String> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("unsupported digest {digest:?} (only sha256 is)"))?;
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(hex)
    } else {
        Err(format!("malformed digest {digest:?}"))
    }
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

pub fn compression(media_type: &str) -> Result<Compression, String> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Ok(Compression::Gzip),
        other => Err(format!(
            "layer media type {other:?} is not supported (tar and tar+gzip are; convert zstd layers with `skopeo copy --dest-compress-format gzip`)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn index(json: &str) -> Index {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn choosing_by_tag_by_platform_or_the_only_one() {
        let one = index(&format!(
            r#"{{"manifests":[{{"mediaType":"{MANIFEST}","digest":"sha256:{HEX_A}","size":1}}]}}"#
        ));
        let here = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
        };
        assert_eq!(
            choose(&one, None, &here).unwrap().digest,
            format!("sha256:{HEX_A}")
        );
        let e = choose(&one, Some("latest"), &here).unwrap_err();
        assert!(e.contains("has no tags"), "{e}");

        let multi = index(
            r#"{"manifests":[
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1","platform":{"architecture":"arm64","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"v1"}},
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2","platform":{"architecture":"amd64","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"v1"}},
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:3","annotations":{"org.opencontainers.image.ref.name":"v2"}}
            ]}"#,
        );
        assert_eq!(
            choose(&multi, Some("v1"), &here).unwrap().digest,
            "sha256:2"
        );
        assert_eq!(
            choose(&multi, Some("v2"), &here).unwrap().digest,
            "sha256:3"
        );
        let e = choose(&multi, Some("v9"), &here).unwrap_err();
        assert!(e.contains("tags: v1, v1, v2"), "{e}");
        let s390 = Platform {
            architecture: "s390x".into(),
            os: "linux".into(),
        };
        let e = choose(&multi, Some("v1"), &s390).unwrap_err();
        assert!(e.contains("none for linux/s390x"), "{e}");
        assert!(choose(&index(r#"{"manifests":[]}"#), None, &here).is_err());
    }

    #[test]
    fn kinds_digests_and_compression() {
        let d = |mt: &str| Descriptor {
            media_type: mt.into(),
            digest: String::new(),
            size: 0,
            annotations: Default::default(),
            platform: None,
        };
        assert_eq!(kind(&d(INDEX)), Kind::Index);
        assert_eq!(kind(&d(DOCKER_LIST)), Kind::Index);
        assert_eq!(kind(&d(MANIFEST)), Kind::Manifest);
        assert_eq!(kind(&d("text/plain")), Kind::Other);
        assert_eq!(sha256_hex(&format!("sha256:{HEX_A}")), Ok(HEX_A));
        assert!(sha256_hex("sha512:abc").is_err());
        assert!(sha256_hex("sha256:../../etc/passwd").is_err());
        assert!(sha256_hex(&format!("sha256:{}", HEX_A.to_uppercase())).is_err());
        assert_eq!(
            compression("application/vnd.oci.image.layer.v1.tar+gzip"),
            Ok(Compression::Gzip)
        );
        assert_eq!(
            compression("application/vnd.oci.image.layer.v1.tar"),
            Ok(Compression::None)
        );
        let e = compression("application/vnd.oci.image.layer.v1.tar+zstd").unwrap_err();
        assert!(e.contains("skopeo"), "{e}");
    }

    #[test]
    fn config_env() {
        let c: Config = serde_json::from_str(
            r#"{"architecture":"amd64","config":{"Env":["PATH=/usr/local/bin:/bin","A=b=c"],"Cmd":["sh"]}}"#,
        )
        .unwrap();
        assert_eq!(c.env(), ["PATH=/usr/local/bin:/bin", "A=b=c"]);
        let empty: Config = serde_json::from_str("{}").unwrap();
        assert!(empty.env().is_empty());
        assert_eq!(this_platform().os, "linux");
    }
}
