use super::*;
use crate::{MemStore, RedbStore};
use std::os::unix::fs::PermissionsExt;

fn app() -> AppName {
    AppName::new("a").unwrap()
}

fn vault(dir: &Path) -> KeyVault {
    KeyVault::load(None, &dir.join("keys/master.key")).unwrap()
}

#[test]
fn seal_open_round_trip_and_no_plaintext_in_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let s = v.seal(&app(), "DB", 1, 5, b"hunter2-plaintext").unwrap();
    let json = serde_json::to_string(&s).unwrap();
    assert!(!json.contains("hunter2"), "{json}");
    assert!(!json.contains(&crypto::to_hex(b"hunter2")), "{json}");
    assert_eq!(v.open(&s).unwrap(), b"hunter2-plaintext");
}

#[test]
fn key_file_is_created_0600_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let sealed = vault(dir.path()).seal(&app(), "K", 1, 0, b"v").unwrap();
    let file = dir.path().join("keys/master.key");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(vault(dir.path()).open(&sealed).unwrap(), b"v");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = KeyVault::load(None, &file).err().unwrap().to_string();
    assert!(e.contains("chmod 600"), "{e}");
}

#[test]
fn tampering_is_detected_and_names_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let good = v.seal(&app(), "API_KEY", 3, 0, b"value").unwrap();
    let flip = |h: &str| {
        let mut b = h.as_bytes().to_vec();
        let i = b.len() - 1;
        b[i] = if b[i] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).unwrap()
    };
    let mut bad = good.clone();
    bad.ciphertext = flip(&bad.ciphertext);
    let e = v.open(&bad).unwrap_err().to_string();
    assert!(e.contains("API_KEY") && e.contains("altered"), "{e}");
    let mut bad = good.clone();
    bad.wrapped_key = flip(&bad.wrapped_key);
    assert!(matches!(v.open(&bad), Err(VaultError::Tampered { .. })));
    // A record moved onto another secret fails like a tampered one.
    let mut moved = good.clone();
    moved.name = "OTHER".into();
    assert!(matches!(v.open(&moved), Err(VaultError::Tampered { .. })));
    let mut moved = good;
    moved.version = 4;
    assert!(matches!(v.open(&moved), Err(VaultError::Tampered { .. })));
}

fn rotation_keeps_every_secret_readable(store: &dyn Store) {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let before = v.key_id().unwrap();
    let mut all = Vec::new();
    for (i, name) in ["A", "B", "C"].iter().enumerate() {
        for version in 1..=2 {
            let value = format!("{name}-{version}-{i}");
            all.push((
                v.seal(&app(), name, version, 0, value.as_bytes()).unwrap(),
                value,
            ));
        }
    }
    let sealed: Vec<_> = all.iter().map(|(s, _)| s.clone()).collect();
    store.put_secrets(&sealed).unwrap();
    let (id, n) = v.rotate(store).unwrap();
    assert_eq!(n, 6);
    assert_ne!(id, before);
    let reloaded = vault(dir.path());
    assert_eq!(reloaded.key_id().unwrap(), id);
    for (s, value) in &all {
        let now = store.secret(&s.app, &s.name, s.version).unwrap().unwrap();
        assert_eq!(now.key_id, id);
        assert_ne!(now.wrapped_key, s.wrapped_key);
        assert_eq!(
            now.ciphertext, s.ciphertext,
            "only the data key is re-wrapped"
        );
        assert_eq!(reloaded.open(&now).unwrap(), value.as_bytes());
    }
    let text = std::fs::read_to_string(dir.path().join("keys/master.key")).unwrap();
    assert_eq!(
        text.lines().filter(|l| !l.starts_with('#')).count(),
        1,
        "old key dropped"
    );
}

#[test]
fn rotation_rewraps_everything_mem() {
    rotation_keeps_every_secret_readable(&MemStore::default());
}

#[test]
fn rotation_rewraps_everything_redb() {
    let dir = tempfile::tempdir().unwrap();
    rotation_keeps_every_secret_readable(&RedbStore::open(&dir.path().join("w.redb")).unwrap());
}

#[test]
fn failed_rotation_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let store = MemStore::default();
    let good = v.seal(&app(), "A", 1, 0, b"x").unwrap();
    let mut bad = v.seal(&app(), "B", 1, 0, b"y").unwrap();
    bad.wrapped_key = "00".repeat(60);
    store.put_secrets(&[good.clone(), bad]).unwrap();
    let e = v.rotate(&store).unwrap_err().to_string();
    assert!(e.contains("secret B"), "{e}");
    assert_eq!(store.secret(&app(), "A", 1).unwrap().unwrap(), good);
    assert_eq!(v.open(&good).unwrap(), b"x", "old key still loaded");
}

#[test]
fn env_keys_open_but_do_not_rotate() {
    let key = generate_hex_key().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let v = KeyVault::load(Some(&key), &dir.path().join("unused")).unwrap();
    let s = v.seal(&app(), "K", 1, 0, b"v").unwrap();
    assert_eq!(v.open(&s).unwrap(), b"v");
    assert!(!dir.path().join("unused").exists());
    let e = v.rotate(&MemStore::default()).unwrap_err().to_string();
    assert!(e.contains("WHARF_MASTER_KEY"), "{e}");
    let e = KeyVault::load(Some("nothex"), &dir.path().join("x"))
        .err()
        .unwrap();
    assert!(e.to_string().contains("64 hex digits"), "{e}");
}
