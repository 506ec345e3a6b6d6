use super::*;
use std::collections::BTreeMap;
use wharf_core::ports::Store;
use wharf_types::{AppName, AppRecord, Release};

fn release(app: &str, v: u32) -> Release {
    Release {
        app: AppName::new(app).unwrap(),
        version: v,
        artifact: format!("sha256-{v}"),
        env: BTreeMap::from([("K".into(), v.to_string())]),
        processes: BTreeMap::new(),
        hosts: vec![],
        created_at: 1,
        description: "deploy".into(),
        manifest_env: BTreeMap::new(),
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
    store.delete(&a).unwrap();
    assert!(store.app(&a).unwrap().is_none());
    assert!(store.releases(&a).unwrap().is_empty());
    assert_eq!(
        store.releases(&AppName::new("b").unwrap()).unwrap().len(),
        1
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
