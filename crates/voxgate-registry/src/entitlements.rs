//! The registry's side of entitlements: account changes, plan history, verification
//! requests with identity links, contracts and capacity windows.
//!
//! Contract and window bodies are stored as the JSON the API validated; the registry keeps
//! them, their validity and their audit trail, and does not interpret them.

use crate::{Account, AccountPatch, Actor, Registry, RegistryError, Result, Status, json, random_hex};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// Where a verification request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum VerificationStatus {
    Pending,
    Approved,
    Rejected,
}

impl VerificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VerificationStatus::Pending => "pending",
            VerificationStatus::Approved => "approved",
            VerificationStatus::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<VerificationStatus> {
        match s {
            "pending" => Some(VerificationStatus::Pending),
            "approved" => Some(VerificationStatus::Approved),
            "rejected" => Some(VerificationStatus::Rejected),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewVerification {
    pub account_id: String,
    pub level: String,
    pub sector: Option<String>,
    pub legal_name: String,
    pub bank_account_ref: Option<String>,
    pub contact: String,
    /// Keyed hashes of the identity numbers presented (never the numbers).
    pub identity_hashes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Verification {
    pub id: String,
    pub account_id: String,
    pub level: String,
    pub sector: Option<String>,
    pub legal_name: String,
    pub bank_account_ref: Option<String>,
    pub contact: String,
    /// How many identity numbers were presented (their hashes are not shown).
    pub identities: usize,
    /// Other accounts that presented one of the same identity numbers.
    pub linked_accounts: Vec<String>,
    pub status: VerificationStatus,
    pub reason: Option<String>,
    pub submitted_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    #[serde(skip)]
    pub identity_hashes: Vec<String>,
}

impl Verification {
    fn from_row(r: &AnyRow) -> Verification {
        let hashes: Vec<String> = serde_json::from_str(r.get("identity_hashes")).unwrap_or_default();
        Verification {
            id: r.get("id"),
            account_id: r.get("account_id"),
            level: r.get("level"),
            sector: r.get("sector"),
            legal_name: r.get("legal_name"),
            bank_account_ref: r.get("bank_account_ref"),
            contact: r.get("contact"),
            identities: hashes.len(),
            linked_accounts: serde_json::from_str(r.get("linked_accounts")).unwrap_or_default(),
            status: VerificationStatus::parse(r.get("status")).unwrap_or(VerificationStatus::Pending),
            reason: r.get("reason"),
            submitted_at: r.get("submitted_at"),
            decided_at: r.get("decided_at"),
            decided_by: r.get("decided_by"),
            identity_hashes: hashes,
        }
    }
}

/// A stored contract or capacity window: the validated JSON body and its bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Record {
    pub id: String,
    /// The account (contracts) or app (windows) it belongs to.
    pub owner_id: String,
    pub body: serde_json::Value,
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
    pub created_at: i64,
}

/// One segment of an app's plan history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanSpan {
    pub plan: String,
    pub from_ms: i64,
}

impl Registry {
    /// Changes an account's zone and/or status, audited.
    pub async fn update_account(
        &self,
        id: &str,
        patch: AccountPatch,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<Account> {
        let mut tx = self.write_tx().await?;
        let before = account_in(&mut tx, id).await?;
        let mut after = before.clone();
        if let Some(tz) = patch.time_zone {
            after.time_zone = tz;
        }
        if let Some(status) = patch.status {
            after.status = status;
        }
        if after == before {
            return Ok(before);
        }
        after.updated_at = self.now_ms();
        sqlx::query("UPDATE accounts SET time_zone = $1, status = $2, updated_at = $3 WHERE id = $4")
            .bind(&after.time_zone)
            .bind(after.status.as_str())
            .bind(after.updated_at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.audit(
            &mut tx,
            actor,
            "account.update",
            ("account", id),
            Some(json(&before)),
            Some(json(&after)),
            reason,
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// The plans an app has been on, oldest first.
    pub async fn plan_history(&self, app_id: &str) -> Result<Vec<PlanSpan>> {
        let rows =
            sqlx::query("SELECT plan, from_ms FROM plan_history WHERE app_id = $1 ORDER BY from_ms, seq")
                .bind(app_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(|r| PlanSpan { plan: r.get("plan"), from_ms: r.get("from_ms") }).collect())
    }

    // ---- verification ---------------------------------------------------------------------

    /// Records a verification request. Identity hashes already presented by other accounts
    /// are recorded as links and returned in `linked_accounts`.
    pub async fn submit_verification(&self, new: NewVerification, actor: &Actor) -> Result<Verification> {
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        account_in(&mut tx, &new.account_id).await?;
        let mut linked: Vec<String> = Vec::new();
        for hash in &new.identity_hashes {
            let rows = sqlx::query(
                "SELECT account_id FROM identity_links WHERE identity_hash = $1 AND account_id <> $2",
            )
            .bind(hash)
            .bind(&new.account_id)
            .fetch_all(&mut *tx)
            .await?;
            for r in rows {
                let other: String = r.get("account_id");
                if !linked.contains(&other) {
                    linked.push(other);
                }
            }
            sqlx::query(
                "INSERT INTO identity_links (identity_hash, account_id, first_seen) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(hash)
            .bind(&new.account_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        linked.sort();
        let v = Verification {
            id: format!("ver_{}", random_hex(8)),
            account_id: new.account_id,
            level: new.level,
            sector: new.sector,
            legal_name: new.legal_name,
            bank_account_ref: new.bank_account_ref,
            contact: new.contact,
            identities: new.identity_hashes.len(),
            linked_accounts: linked,
            status: VerificationStatus::Pending,
            reason: None,
            submitted_at: now,
            decided_at: None,
            decided_by: None,
            identity_hashes: new.identity_hashes,
        };
        sqlx::query(
            "INSERT INTO verification_requests (id, account_id, level, sector, legal_name, bank_account_ref, contact,
                 identity_hashes, linked_accounts, status, submitted_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&v.id)
        .bind(&v.account_id)
        .bind(&v.level)
        .bind(&v.sector)
        .bind(&v.legal_name)
        .bind(&v.bank_account_ref)
        .bind(&v.contact)
        .bind(json(&v.identity_hashes))
        .bind(json(&v.linked_accounts))
        .bind(v.status.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        self.audit(
            &mut tx,
            actor,
            "verification.submit",
            ("verification", &v.id),
            None,
            Some(json(&v)),
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(v)
    }

    pub async fn verification(&self, id: &str) -> Result<Verification> {
        sqlx::query("SELECT * FROM verification_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| Verification::from_row(&r))
            .ok_or_else(|| RegistryError::NotFound { kind: "verification", id: id.into() })
    }

    /// Verification requests, oldest first, optionally of one account and/or one status.
    pub async fn verifications(
        &self,
        account_id: Option<&str>,
        status: Option<VerificationStatus>,
    ) -> Result<Vec<Verification>> {
        let rows = sqlx::query(
            "SELECT * FROM verification_requests
             WHERE (CAST($1 AS TEXT) IS NULL OR account_id = $2) AND (CAST($3 AS TEXT) IS NULL OR status = $4)
             ORDER BY submitted_at, id",
        )
        .bind(account_id)
        .bind(account_id)
        .bind(status.map(|s| s.as_str()))
        .bind(status.map(|s| s.as_str()))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(Verification::from_row).collect())
    }

    /// Approves or rejects a pending request. Approval sets the account's level (and sector)
    /// and claims the free allowance for each identity presented; an identity another account
    /// claimed first leaves this account without the free allowance.
    pub async fn decide_verification(
        &self,
        id: &str,
        approve: bool,
        reason: &str,
        actor: &Actor,
    ) -> Result<(Verification, Account)> {
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        let before = sqlx::query("SELECT * FROM verification_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| Verification::from_row(&r))
            .ok_or_else(|| RegistryError::NotFound { kind: "verification", id: id.into() })?;
        if before.status != VerificationStatus::Pending {
            return Err(RegistryError::Conflict(format!(
                "verification `{id}` is already {}",
                before.status.as_str()
            )));
        }
        let mut after = before.clone();
        after.status = if approve { VerificationStatus::Approved } else { VerificationStatus::Rejected };
        after.reason = Some(reason.to_string());
        after.decided_at = Some(now);
        after.decided_by = Some(actor.0.clone());
        sqlx::query(
            "UPDATE verification_requests SET status = $1, reason = $2, decided_at = $3, decided_by = $4 WHERE id = $5",
        )
        .bind(after.status.as_str())
        .bind(reason)
        .bind(now)
        .bind(&actor.0)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let action = if approve { "verification.approve" } else { "verification.reject" };
        self.audit(
            &mut tx,
            actor,
            action,
            ("verification", id),
            Some(json(&before)),
            Some(json(&after)),
            Some(reason),
        )
        .await?;
        let account_before = account_in(&mut tx, &before.account_id).await?;
        let mut account = account_before.clone();
        if approve {
            let mut free_allowance = true;
            for hash in &before.identity_hashes {
                sqlx::query(
                    "INSERT INTO identity_claims (identity_hash, account_id, claimed_at) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                )
                .bind(hash)
                .bind(&before.account_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let holder: String =
                    sqlx::query("SELECT account_id FROM identity_claims WHERE identity_hash = $1")
                        .bind(hash)
                        .fetch_one(&mut *tx)
                        .await?
                        .get("account_id");
                if holder != before.account_id {
                    free_allowance = false;
                }
            }
            account.verification_level = before.level.clone();
            account.sector = before.sector.clone();
            account.free_allowance = account.free_allowance && free_allowance;
            account.updated_at = now;
            sqlx::query(
                "UPDATE accounts SET verification_level = $1, sector = $2, free_allowance = $3, updated_at = $4 WHERE id = $5",
            )
            .bind(&account.verification_level)
            .bind(&account.sector)
            .bind(account.free_allowance as i64)
            .bind(now)
            .bind(&account.id)
            .execute(&mut *tx)
            .await?;
            self.audit(
                &mut tx,
                actor,
                "account.verify",
                ("account", &account.id),
                Some(json(&account_before)),
                Some(json(&account)),
                Some(reason),
            )
            .await?;
        }
        tx.commit().await?;
        Ok((after, account))
    }

    // ---- contracts and windows ------------------------------------------------------------

    /// Stores a contract (its validated body) for an account, audited.
    pub async fn create_contract(
        &self,
        account_id: &str,
        body: &serde_json::Value,
        valid: (Option<i64>, Option<i64>),
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<Record> {
        let mut tx = self.write_tx().await?;
        account_in(&mut tx, account_id).await?;
        let record = Record {
            id: format!("ctr_{}", random_hex(8)),
            owner_id: account_id.to_string(),
            body: body.clone(),
            valid_from: valid.0,
            valid_until: valid.1,
            created_at: self.now_ms(),
        };
        sqlx::query(
            "INSERT INTO contracts (id, account_id, body, valid_from, valid_until, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&record.id)
        .bind(account_id)
        .bind(body.to_string())
        .bind(record.valid_from)
        .bind(record.valid_until)
        .bind(record.created_at)
        .execute(&mut *tx)
        .await?;
        self.audit(
            &mut tx,
            actor,
            "contract.create",
            ("contract", &record.id),
            None,
            Some(json(&record)),
            reason,
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Contracts, optionally of one account, oldest first.
    pub async fn contracts(&self, account_id: Option<&str>) -> Result<Vec<Record>> {
        let rows = sqlx::query(
            "SELECT id, account_id AS owner_id, body, valid_from, valid_until, created_at FROM contracts
             WHERE (CAST($1 AS TEXT) IS NULL OR account_id = $2) ORDER BY created_at, id",
        )
        .bind(account_id)
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(record_from_row).collect())
    }

    /// Ends a contract at `at_ms` (its `valid_until` moves earlier, never later), audited.
    pub async fn end_contract(
        &self,
        id: &str,
        at_ms: i64,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<Record> {
        let mut tx = self.write_tx().await?;
        let before = sqlx::query(
            "SELECT id, account_id AS owner_id, body, valid_from, valid_until, created_at FROM contracts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| record_from_row(&r))
        .ok_or_else(|| RegistryError::NotFound { kind: "contract", id: id.into() })?;
        let mut after = before.clone();
        after.valid_until = Some(before.valid_until.map_or(at_ms, |u| u.min(at_ms)));
        sqlx::query("UPDATE contracts SET valid_until = $1 WHERE id = $2")
            .bind(after.valid_until)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.audit(
            &mut tx,
            actor,
            "contract.end",
            ("contract", id),
            Some(json(&before)),
            Some(json(&after)),
            reason,
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Stores a capacity window (its validated body) for an app, audited.
    pub async fn create_window(
        &self,
        app_id: &str,
        body: &serde_json::Value,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<Record> {
        let mut tx = self.write_tx().await?;
        let exists =
            sqlx::query("SELECT 1 FROM apps WHERE id = $1").bind(app_id).fetch_optional(&mut *tx).await?;
        if exists.is_none() {
            return Err(RegistryError::NotFound { kind: "app", id: app_id.into() });
        }
        let record = Record {
            id: format!("win_{}", random_hex(8)),
            owner_id: app_id.to_string(),
            body: body.clone(),
            valid_from: None,
            valid_until: None,
            created_at: self.now_ms(),
        };
        sqlx::query("INSERT INTO capacity_windows (id, app_id, body, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&record.id)
            .bind(app_id)
            .bind(body.to_string())
            .bind(record.created_at)
            .execute(&mut *tx)
            .await?;
        self.audit(
            &mut tx,
            actor,
            "window.create",
            ("window", &record.id),
            None,
            Some(json(&record)),
            reason,
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Live capacity windows, optionally of one app, oldest first.
    pub async fn windows(&self, app_id: Option<&str>) -> Result<Vec<Record>> {
        let rows = sqlx::query(
            "SELECT id, app_id AS owner_id, body, CAST(NULL AS BIGINT) AS valid_from, CAST(NULL AS BIGINT) AS valid_until, created_at
             FROM capacity_windows WHERE deleted_at IS NULL AND (CAST($1 AS TEXT) IS NULL OR app_id = $2) ORDER BY created_at, id",
        )
        .bind(app_id)
        .bind(app_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(record_from_row).collect())
    }

    /// Removes a capacity window, audited.
    pub async fn delete_window(&self, id: &str, actor: &Actor, reason: Option<&str>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let before = sqlx::query(
            "SELECT id, app_id AS owner_id, body, CAST(NULL AS BIGINT) AS valid_from, CAST(NULL AS BIGINT) AS valid_until, created_at
             FROM capacity_windows WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| record_from_row(&r))
        .ok_or_else(|| RegistryError::NotFound { kind: "window", id: id.into() })?;
        sqlx::query("UPDATE capacity_windows SET deleted_at = $1 WHERE id = $2")
            .bind(self.now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.audit(&mut tx, actor, "window.delete", ("window", id), Some(json(&before)), None, reason)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

fn record_from_row(r: &AnyRow) -> Record {
    Record {
        id: r.get("id"),
        owner_id: r.get("owner_id"),
        body: serde_json::from_str(r.get("body")).unwrap_or(serde_json::Value::Null),
        valid_from: r.get("valid_from"),
        valid_until: r.get("valid_until"),
        created_at: r.get("created_at"),
    }
}

async fn account_in(tx: &mut sqlx::AnyConnection, id: &str) -> Result<Account> {
    sqlx::query("SELECT * FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| Account::from_row(&r))
        .ok_or_else(|| RegistryError::NotFound { kind: "account", id: id.into() })
}

impl Status {
    /// Whether calls may be made.
    pub fn is_active(self) -> bool {
        self == Status::Active
    }
}
