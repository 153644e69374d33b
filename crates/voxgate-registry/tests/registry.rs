//! The registry against a real SQLite file: records, audit, usage, and reopening.

use voxgate_registry::*;

/// Where a test's registry lives: a temporary SQLite directory, or a PostgreSQL database of
/// its own on the local server (dropped at the end).
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

#[derive(Clone, Copy)]
enum Kind {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests use: `VOXGATE_TEST_POSTGRES` or the local one (trust auth).
fn pg_base() -> String {
    std::env::var("VOXGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

async fn pg_admin(sql: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&format!("{}/postgres", pg_base()))
        .await
        .expect("PostgreSQL must be running (scripts/services.sh starts it)");
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

impl Db {
    async fn new(kind: Kind) -> Db {
        match kind {
            Kind::Sqlite => Db::Sqlite(tempfile::tempdir().unwrap()),
            Kind::Postgres => {
                let name = format!("vg_test_{:016x}", rand_u64());
                pg_admin(&format!("CREATE DATABASE {name}")).await;
                Db::Postgres(name)
            }
        }
    }

    async fn open(&self) -> Registry {
        match self {
            Db::Sqlite(dir) => Registry::open(dir.path()).await.unwrap(),
            Db::Postgres(name) => Registry::connect(&format!("{}/{name}", pg_base())).await.unwrap(),
        }
    }

    async fn drop_db(self) {
        if let Db::Postgres(name) = self {
            pg_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

async fn open_kind(kind: Kind) -> (Db, Registry) {
    let db = Db::new(kind).await;
    let reg = db.open().await;
    (db, reg)
}

/// Runs one case against SQLite and against PostgreSQL.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name(super::Kind::Sqlite).await
                }
                #[tokio::test]
                async fn postgres() {
                    super::$name(super::Kind::Postgres).await
                }
            }
        )*
    };
}

on_both!(
    accounts_apps_keys_and_audit_survive_reopening,
    audit_log_is_append_only,
    errors_for_missing_and_duplicate_records,
    usage_adds_up_across_flushes_and_nodes,
    one_identity_on_two_accounts_is_linked_and_claims_the_free_allowance_once,
    plan_history_contracts_and_windows,
    increases_alerts_and_adjustments,
);

fn new_account() -> NewAccount {
    NewAccount {
        name: "Acme".into(),
        verification_level: "individual".into(),
        time_zone: "Asia/Shanghai".into(),
    }
}

async fn accounts_apps_keys_and_audit_survive_reopening(kind: Kind) {
    let (db, reg) = open_kind(kind).await;
    let dir = &db;
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

    let reg = dir.open().await;
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
    reg.close().await;
    db.drop_db().await;
}

async fn audit_log_is_append_only(kind: Kind) {
    let (db, reg) = open_kind(kind).await;
    reg.create_account(new_account(), None, &Actor::admin()).await.unwrap();
    let pool_err = reg.audit_tamper_for_tests().await;
    assert!(pool_err.contains("append-only"), "{pool_err}");
    reg.close().await;
    db.drop_db().await;
}

async fn errors_for_missing_and_duplicate_records(kind: Kind) {
    let (db, reg) = open_kind(kind).await;
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
    reg.close().await;
    db.drop_db().await;
}

async fn usage_adds_up_across_flushes_and_nodes(kind: Kind) {
    let (db, reg) = open_kind(kind).await;
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
    reg.close().await;
    db.drop_db().await;
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

async fn one_identity_on_two_accounts_is_linked_and_claims_the_free_allowance_once(kind: Kind) {
    let (db, reg) = open_kind(kind).await;
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
    reg.close().await;
    db.drop_db().await;
}

async fn plan_history_contracts_and_windows(kind: Kind) {
    let (db, reg) = open_kind(kind).await;
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
    reg.close().await;
    db.drop_db().await;
}

async fn increases_alerts_and_adjustments(kind: Kind) {
    let (db, reg) = open_kind(kind).await;
    let acc = reg.create_account(new_account(), None, &Actor::admin()).await.unwrap();
    let (app, _) = reg
        .create_app(
            NewApp { account_id: acc.id.clone(), name: "x".into(), plan: "payg".into() },
            None,
            &Actor::admin(),
        )
        .await
        .unwrap();
    let before = reg.last_change().await.unwrap();
    let r = IncreaseRequest {
        id: "inc_1".into(),
        app_id: app.id.clone(),
        account_id: acc.id.clone(),
        service: "asr".into(),
        dimension: "concurrency".into(),
        requested: serde_json::json!({"max": 40}),
        granted: None,
        business_case: serde_json::json!({}),
        justification: "launch".into(),
        contact_email: "a@b.test".into(),
        sizing: serde_json::json!({"justified": 50}),
        evidence: serde_json::json!({}),
        status: "submitted".into(),
        reason: None,
        grant_expires_at: None,
        created_at: 1,
        updated_at: 1,
        decided_by: None,
    };
    reg.create_increase_request(&r, &Actor::admin()).await.unwrap();
    assert!(reg.last_change().await.unwrap() > before, "every change moves the change marker");
    let change = IncreaseChange {
        status: "pending_review",
        granted: None,
        reason: Some("review"),
        grant_expires_at: None,
    };
    reg.change_increase_request("inc_1", &["submitted"], change.clone(), "increase.triage", &Actor::system())
        .await
        .unwrap();
    assert!(matches!(
        reg.change_increase_request("inc_1", &["submitted"], change, "increase.triage", &Actor::system())
            .await,
        Err(RegistryError::Conflict(_))
    ));
    let approve = IncreaseChange {
        status: "partially_approved",
        granted: Some(serde_json::json!({"max": 30})),
        reason: Some("half"),
        grant_expires_at: Some(99),
    };
    let after = reg
        .change_increase_request("inc_1", &["pending_review"], approve, "increase.approve", &Actor::admin())
        .await
        .unwrap();
    assert_eq!(
        (after.requested["max"].as_i64(), after.granted.as_ref().unwrap()["max"].as_i64()),
        (Some(40), Some(30))
    );
    assert_eq!(reg.increase_requests(None, &["partially_approved"]).await.unwrap().len(), 1);

    // Alerts: once per dedupe key and webhook, delivered or retried.
    let hook = reg
        .create_webhook(&acc.id, "http://127.0.0.1:1/hook", "secret-0123456789abcdef", &Actor::admin())
        .await
        .unwrap();
    let payload = serde_json::json!({"threshold": 80});
    assert_eq!(reg.enqueue_alert(&acc.id, "quota:x:80", "quota.threshold", &payload).await.unwrap(), 1);
    assert_eq!(reg.enqueue_alert(&acc.id, "quota:x:80", "quota.threshold", &payload).await.unwrap(), 0);
    // Two nodes claim at once: only one gets the alert until its claim ends.
    let due = reg.claim_due_alerts("node-a", 10, 30_000).await.unwrap();
    assert_eq!((due.len(), due[0].webhook_id.as_str()), (1, hook.id.as_str()));
    assert!(reg.claim_due_alerts("node-b", 10, 30_000).await.unwrap().is_empty());
    reg.mark_failed(&due[0].id, "refused", i64::MAX / 4).await.unwrap();
    assert!(reg.due_alerts(10).await.unwrap().is_empty());
    reg.mark_delivered(&due[0].id).await.unwrap();
    let alerts = reg.alerts(&acc.id, 10).await.unwrap();
    assert_eq!((alerts[0].attempts, alerts[0].delivered_at.is_some()), (2, true));

    // Adjustments: stored, updated, audited only when the factor moves.
    let mut row = AdjustmentRow {
        app_id: app.id.clone(),
        service: "asr".into(),
        dimension: "rate".into(),
        factor: 1.0,
        high_since: Some(5),
        low_since: None,
        updated_at: 5,
    };
    reg.save_adjustment(&row, 1.0, &Actor::system()).await.unwrap();
    row.factor = 1.1;
    reg.save_adjustment(&row, 1.0, &Actor::system()).await.unwrap();
    assert_eq!(reg.adjustments().await.unwrap()[0].factor, 1.1);
    let audit = reg.audit_log(None).await.unwrap();
    assert_eq!(audit.iter().filter(|a| a.action.starts_with("adjustment.")).count(), 1);
    reg.close().await;
    db.drop_db().await;
}
