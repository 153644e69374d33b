//! The registry's records, as the rest of voxgate sees them.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// Whether an account or app may make calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    Suspended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Suspended => "suspended",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "active" => Some(Status::Active),
            "suspended" => Some(Status::Suspended),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Account {
    pub id: String,
    pub name: String,
    pub verification_level: String,
    /// The sector of an industry-verified account (e.g. `education`).
    pub sector: Option<String>,
    pub time_zone: String,
    pub status: Status,
    /// False when this account's verified identity claimed the free allowance elsewhere first.
    pub free_allowance: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Account {
    pub(crate) fn from_row(r: &AnyRow) -> Account {
        Account {
            id: r.get("id"),
            name: r.get("name"),
            verification_level: r.get("verification_level"),
            sector: r.get("sector"),
            time_zone: r.get("time_zone"),
            status: Status::parse(r.get("status")).unwrap_or(Status::Suspended),
            free_allowance: r.get::<i64, _>("free_allowance") != 0,
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        }
    }
}

/// A change to an account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AccountPatch {
    pub time_zone: Option<String>,
    pub status: Option<Status>,
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub name: String,
    pub verification_level: String,
    pub time_zone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct App {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub plan: String,
    pub status: Status,
    /// Monthly spending cap (exact decimal, catalogue currency); `None` for no cap.
    pub spending_cap: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl App {
    pub(crate) fn from_row(r: &AnyRow) -> App {
        App {
            id: r.get("id"),
            account_id: r.get("account_id"),
            name: r.get("name"),
            plan: r.get("plan"),
            status: Status::parse(r.get("status")).unwrap_or(Status::Suspended),
            spending_cap: r.get("spending_cap"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewApp {
    pub account_id: String,
    pub name: String,
    pub plan: String,
}

/// A change to an app; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AppPatch {
    pub plan: Option<String>,
    pub status: Option<Status>,
    /// `Some(None)` removes the cap.
    pub spending_cap: Option<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub subject_kind: String,
    pub subject_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub reason: Option<String>,
}

impl AuditEntry {
    pub(crate) fn from_row(r: &AnyRow) -> AuditEntry {
        let parse = |col: &str| r.get::<Option<String>, _>(col).and_then(|s| serde_json::from_str(&s).ok());
        AuditEntry {
            seq: r.get("seq"),
            at: r.get("at"),
            actor: r.get("actor"),
            action: r.get("action"),
            subject_kind: r.get("subject_kind"),
            subject_id: r.get("subject_id"),
            before: parse("before"),
            after: parse("after"),
            reason: r.get("reason"),
        }
    }
}
