//! The registry against a real SQLite file: records, audit, usage, and reopening.

use voxgate_registry::*;

async fn open() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).await.unwrap();
    (dir, reg)
}

fn new_account() -> NewAccount {
    NewAccount {
        name: "Acme".into(),
        verification_level: "individual".into(),
        time_zone: "Asia/Shanghai".into(),
    }
}

#[tokio::test]
async fn accounts_apps_keys_and_audit_survive_reopening() {
    let (dir, reg) = open().await;
    let acc = reg.create_account(new_account(), None, &Actor::admin()).await.unwrap();
    let (app, key) = reg
        .create_app(
            NewApp { account_id: acc.id.clone(), name: "bot".into(), plan: "free".into() },
            None,
            &Actor::admin(),
        )
        .await
        .unwrap();
    assert!(key.starts_with("vgk_"));
    let patched = reg
        .update_app(
            &app.id,
            AppPatch { plan: Some("payg".into()), status: Some(Status::Suspended) },
            &Actor::admin(),
            Some("upgrade"),
        )
        .await
        .unwrap();
    assert_eq!((patched.plan.as_str(), patched.status), ("payg", Status::Suspended));
    reg.close().await;

    let reg = Registry::open(dir.path()).await.unwrap();
    assert_eq!(reg.account(&acc.id).await.unwrap(), acc);
    assert_eq!(reg.app(&app.id).await.unwrap(), patched);
    let keys = reg.key_hashes().await.unwrap();
    assert_eq!(keys, vec![(hash_key(&key), app.id.clone())]);
    let audit = reg.audit_log(Some(("app", &app.id))).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1].action, "app.update");
    assert_eq!(audit[1].before.as_ref().unwrap()["plan"], "free");
    assert_eq!(audit[1].after.as_ref().unwrap()["plan"], "payg");
    assert_eq!(audit[1].reason.as_deref(), Some("upgrade"));
}

#[tokio::test]
async fn audit_log_is_append_only() {
    let (_dir, reg) = open().await;
    reg.create_account(new_account(), None, &Actor::admin()).await.unwrap();
    let pool_err = reg.audit_tamper_for_tests().await;
    assert!(pool_err.contains("append-only"), "{pool_err}");
}

#[tokio::test]
async fn errors_for_missing_and_duplicate_records() {
    let (_dir, reg) = open().await;
    assert!(matches!(reg.account("nope").await, Err(RegistryError::NotFound { .. })));
    let orphan = NewApp { account_id: "nope".into(), name: "x".into(), plan: "free".into() };
    assert!(matches!(
        reg.create_app(orphan, None, &Actor::admin()).await,
        Err(RegistryError::NotFound { .. })
    ));
    reg.create_account(new_account(), Some("demo".into()), &Actor::system()).await.unwrap();
    assert!(matches!(
        reg.create_account(new_account(), Some("demo".into()), &Actor::system()).await,
        Err(RegistryError::Conflict(_))
    ));
}

#[tokio::test]
async fn usage_adds_up_across_flushes_and_nodes() {
    let (_dir, reg) = open().await;
    let row = |minute, units| UsageRow {
        app_id: "a".into(),
        service: "asr".into(),
        minute,
        allowed: 2,
        refused: [1, 0, 0, 0, 0],
        units_milli: units,
    };
    reg.record_usage("n1", &[row(0, 1000), row(60, 2000)]).await.unwrap();
    reg.record_usage("n1", &[row(60, 500)]).await.unwrap();
    reg.record_usage("n2", &[row(3600, -200)]).await.unwrap();
    assert_eq!(reg.units_by_service("a", 0, 3600).await.unwrap(), vec![("asr".to_string(), 3500)]);
    assert_eq!(reg.units_by_service("a", 0, 7200).await.unwrap(), vec![("asr".to_string(), 3300)]);
    let tz = jiff::tz::TimeZone::UTC;
    let minutes = reg.usage_series("a", Some("asr"), 0, 7200, Step::Minute, &tz).await.unwrap();
    assert_eq!(minutes.len(), 3);
    assert_eq!((minutes[1].allowed, minutes[1].units_milli), (4, 2500));
    let hours = reg.usage_series("a", None, 0, 7200, Step::Hour, &tz).await.unwrap();
    assert_eq!(
        hours.iter().map(|b| (b.start, b.allowed, b.refused[0])).collect::<Vec<_>>(),
        vec![(0, 6, 3), (3600, 2, 1)]
    );
    assert!(reg.usage_series("a", Some("tts"), 0, 7200, Step::Day, &tz).await.unwrap().is_empty());
}
