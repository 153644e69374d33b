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
            AppPatch { plan: Some("payg".into()), status: Some(Status::Suspended), ..Default::default() },
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
        peak_per_second: minute as u64 / 60 + 1,
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
    let stats = reg.usage_stats("a", "asr", 0, 7200).await.unwrap();
    assert_eq!((stats.allowed, stats.refused[0], stats.active_minutes), (8, 4, 3));
    // Two flushes of minute 60 sum to 6 requests; a per-second peak is the largest seen (61, at minute 3600).
    assert_eq!((stats.peak_per_minute, stats.peak_per_second), (6, 61));
}

fn verification(account: &str, hashes: &[&str]) -> NewVerification {
    NewVerification {
        account_id: account.into(),
        level: "enterprise".into(),
        sector: None,
        legal_name: "Acme Ltd".into(),
        bank_account_ref: Some("iban-ref-1".into()),
        contact: "ops@acme.test".into(),
        identity_hashes: hashes.iter().map(|h| h.to_string()).collect(),
    }
}

#[tokio::test]
async fn one_identity_on_two_accounts_is_linked_and_claims_the_free_allowance_once() {
    let (_dir, reg) = open().await;
    let a = reg.create_account(new_account(), None, &Actor::admin()).await.unwrap();
    let b = reg.create_account(new_account(), None, &Actor::admin()).await.unwrap();
    let va = reg.submit_verification(verification(&a.id, &["h1"]), &Actor::admin()).await.unwrap();
    assert!(va.linked_accounts.is_empty());
    let vb = reg.submit_verification(verification(&b.id, &["h1", "h2"]), &Actor::admin()).await.unwrap();
    assert_eq!(vb.linked_accounts, vec![a.id.clone()]);
    assert_eq!(vb.identities, 2);

    let (_, acc_a) = reg.decide_verification(&va.id, true, "documents ok", &Actor::admin()).await.unwrap();
    assert_eq!((acc_a.verification_level.as_str(), acc_a.free_allowance), ("enterprise", true));
    let (vb, acc_b) = reg.decide_verification(&vb.id, true, "ok", &Actor::admin()).await.unwrap();
    assert_eq!(vb.status, VerificationStatus::Approved);
    assert!(!acc_b.free_allowance, "h1 was claimed by the first account");
    assert!(matches!(
        reg.decide_verification(&vb.id, false, "again", &Actor::admin()).await,
        Err(RegistryError::Conflict(_))
    ));
    let pending = reg.verifications(None, Some(VerificationStatus::Pending)).await.unwrap();
    assert!(pending.is_empty());
    let audit = reg.audit_log(Some(("account", &b.id))).await.unwrap();
    assert_eq!(audit.last().unwrap().action, "account.verify");
}

#[tokio::test]
async fn plan_history_contracts_and_windows() {
    let (_dir, reg) = open().await;
    let acc = reg.create_account(new_account(), None, &Actor::admin()).await.unwrap();
    let (app, _) = reg
        .create_app(
            NewApp { account_id: acc.id.clone(), name: "x".into(), plan: "free".into() },
            None,
            &Actor::admin(),
        )
        .await
        .unwrap();
    reg.update_app(
        &app.id,
        AppPatch { plan: Some("payg".into()), ..Default::default() },
        &Actor::admin(),
        None,
    )
    .await
    .unwrap();
    reg.update_app(
        &app.id,
        AppPatch { status: Some(Status::Suspended), ..Default::default() },
        &Actor::admin(),
        None,
    )
    .await
    .unwrap();
    let history = reg.plan_history(&app.id).await.unwrap();
    assert_eq!(history.iter().map(|p| p.plan.as_str()).collect::<Vec<_>>(), vec!["free", "payg"]);

    let body = serde_json::json!({"limits": {"asr": {"daily": 5}}});
    let c = reg
        .create_contract(&acc.id, &body, (Some(1000), Some(5000)), &Actor::admin(), Some("signed"))
        .await
        .unwrap();
    let ended = reg.end_contract(&c.id, 3000, &Actor::admin(), Some("terminated")).await.unwrap();
    assert_eq!(ended.valid_until, Some(3000));
    let again = reg.end_contract(&c.id, 4000, &Actor::admin(), None).await.unwrap();
    assert_eq!(again.valid_until, Some(3000), "ending never extends a contract");
    assert_eq!(reg.contracts(Some(&acc.id)).await.unwrap()[0].body, body);

    let w = reg
        .create_window(&app.id, &serde_json::json!({"service": "asr"}), &Actor::admin(), None)
        .await
        .unwrap();
    assert_eq!(reg.windows(Some(&app.id)).await.unwrap().len(), 1);
    reg.delete_window(&w.id, &Actor::admin(), Some("event over")).await.unwrap();
    assert!(reg.windows(None).await.unwrap().is_empty());
    assert!(matches!(
        reg.delete_window(&w.id, &Actor::admin(), None).await,
        Err(RegistryError::NotFound { .. })
    ));
}
