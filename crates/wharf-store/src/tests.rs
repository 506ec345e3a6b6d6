use super::*;
use std::collections::BTreeMap;
use wharf_core::ports::{Store, StoreError};
use wharf_types::access::{AuditEntry, Role, TokenRecord};
use wharf_types::secret::SealedSecret;
use wharf_types::{AppName, AppRecord, Release};

fn release(app: &str, v: u32) -> Release {
    Release {
        app: AppName::new(app).unwrap(),
        version: v,
        artifact: format!("sha256-{v}"),
        env: BTreeMap::from([("K".into(), v.to_string())]),
        processes: BTreeMap::new(),
        hosts: vec![],
        tls: Default::default(),
        created_at: 1,
        description: "deploy".into(),
        manifest_env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        rotate: BTreeMap::new(),
        secrets_as_files: false,
        route: Default::default(),
    }
}

fn contract(store: &dyn Store) {
    let a = AppName::new("a").unwrap();
    let mut rec = AppRecord::new(a.clone(), 1);
    assert!(store.app(&a).unwrap().is_none());
    rec.latest = 1;
    rec.target = Some(1);
    store.put(&rec, Some(&release("a", 1))).unwrap();
    rec.latest = 2;
    store.put(&rec, Some(&release("a", 2))).unwrap();
    store
        .put(
            &AppRecord::new(AppName::new("b").unwrap(), 1),
            Some(&release("b", 1)),
        )
        .unwrap();
    assert_eq!(store.app(&a).unwrap().unwrap().latest, 2);
    assert_eq!(
        store
            .releases(&a)
            .unwrap()
            .iter()
            .map(|r| r.version)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(store.release(&a, 2).unwrap().unwrap().env["K"], "2");
    let e = store.put(&rec, Some(&release("a", 2))).unwrap_err();
    assert!(e.to_string().contains("immutable"), "{e}");
    assert_eq!(store.release(&a, 2).unwrap().unwrap().artifact, "sha256-2");
    assert_eq!(store.apps().unwrap().len(), 2);
    secrets_tokens_audit(store, &a);
    store.delete(&a).unwrap();
    assert!(
        store.secrets(&a).unwrap().is_empty(),
        "secrets go with the app"
    );
    assert_eq!(store.secrets(&AppName::new("b").unwrap()).unwrap().len(), 1);
    assert!(store.app(&a).unwrap().is_none());
    assert!(store.releases(&a).unwrap().is_empty());
    assert_eq!(
        store.releases(&AppName::new("b").unwrap()).unwrap().len(),
        1
    );
}

fn sealed(app: &str, name: &str, v: u32) -> SealedSecret {
    SealedSecret {
        app: AppName::new(app).unwrap(),
        name: name.into(),
        version: v,
        created_at: 1,
        key_id: "k1".into(),
        wrapped_key: "00".into(),
        ciphertext: format!("{name}{v}"),
    }
}

fn secrets_tokens_audit(store: &dyn Store, a: &AppName) {
    store
        .put_secrets(&[
            sealed("a", "X", 1),
            sealed("a", "X", 2),
            sealed("b", "X", 1),
        ])
        .unwrap();
    assert_eq!(store.secrets(a).unwrap().len(), 2);
    assert_eq!(store.secret(a, "X", 2).unwrap().unwrap().ciphertext, "X2");
    assert!(store.secret(a, "Y", 1).unwrap().is_none());
    let n = store
        .rewrap_secrets(&mut |s: &mut SealedSecret| {
            s.key_id = "k2".into();
            Ok(())
        })
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(store.secret(a, "X", 1).unwrap().unwrap().key_id, "k2");
    let e = store
        .rewrap_secrets(&mut |s: &mut SealedSecret| {
            if s.app.as_str() == "b" {
                return Err(StoreError("boom".into()));
            }
            s.key_id = "k3".into();
            Ok(())
        })
        .unwrap_err();
    assert!(e.to_string().contains("boom"));
    assert_eq!(
        store.secret(a, "X", 1).unwrap().unwrap().key_id,
        "k2",
        "a failed rewrap changes nothing"
    );

    let mut t = TokenRecord {
        id: "tok-1".into(),
        hash: "h".into(),
        role: Role::Viewer,
        app: None,
        created_at: 1,
        revoked_at: None,
    };
    store.put_token(&t).unwrap();
    t.revoked_at = Some(2);
    store.put_token(&t).unwrap();
    assert_eq!(store.tokens().unwrap(), vec![t]);

    for i in 0..3 {
        store
            .append_audit(&AuditEntry {
                at: i,
                who: "local".into(),
                action: format!("act{i}"),
                app: None,
                outcome: "ok".into(),
            })
            .unwrap();
    }
    let log = store.audit().unwrap();
    assert_eq!(
        log.iter().map(|e| e.at).collect::<Vec<_>>(),
        [0, 1, 2],
        "oldest first"
    );
}

#[test]
fn mem_store_contract() {
    contract(&MemStore::default());
}

#[test]
fn redb_store_contract_and_durability() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.redb");
    {
        let s = RedbStore::open(&path).unwrap();
        contract(&s);
    }
    let s = RedbStore::open(&path).unwrap();
    assert_eq!(s.apps().unwrap().len(), 1, "survives reopening");
    assert_eq!(
        s.release(&AppName::new("b").unwrap(), 1)
            .unwrap()
            .unwrap()
            .version,
        1
    );
}

#[test]
fn second_open_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.redb");
    let _first = RedbStore::open(&path).unwrap();
    let e = RedbStore::open(&path).err().expect("second open must fail");
    assert!(e.to_string().contains("another wharf server"), "{e}");
}

#[test]
fn a_closed_store_releases_its_file_for_the_next_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.redb");
    let first = RedbStore::open(&path).unwrap();
    let a = AppName::new("a").unwrap();
    first.put(&AppRecord::new(a.clone(), 1), None).unwrap();
    first.close();
    let e = first.apps().unwrap_err();
    assert!(e.to_string().contains("handed over"), "{e}");
    let second = RedbStore::open(&path).expect("the file is free after close");
    assert_eq!(second.apps().unwrap().len(), 1, "nothing was lost");
}
