//! Limit-increase requests: their statuses, the transitions between them, and the policy that
//! decides which requests are approved automatically.
//!
//! ```text
//! submitted ──triage──▶ auto_approved ─┐
//!     │                                ├─expire─▶ expired        (renew keeps the status)
//!     └──triage──▶ pending_review ──approve──▶ approved / partially_approved ─┘
//!                        │  └──deny──▶ denied
//!                        └──withdraw──▶ withdrawn   (also from submitted)
//! ```
//! Requested and granted values are kept apart: a partial approval grants less than asked.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Submitted,
    AutoApproved,
    PendingReview,
    Approved,
    PartiallyApproved,
    Denied,
    Withdrawn,
    Expired,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Submitted,
        Status::AutoApproved,
        Status::PendingReview,
        Status::Approved,
        Status::PartiallyApproved,
        Status::Denied,
        Status::Withdrawn,
        Status::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "submitted",
            Status::AutoApproved => "auto_approved",
            Status::PendingReview => "pending_review",
            Status::Approved => "approved",
            Status::PartiallyApproved => "partially_approved",
            Status::Denied => "denied",
            Status::Withdrawn => "withdrawn",
            Status::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether a request in this status grants capacity now.
    pub fn grants(self) -> bool {
        matches!(self, Status::AutoApproved | Status::Approved | Status::PartiallyApproved)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The policy's first look: automatic approval or the review queue.
    Triage {
        auto_approve: bool,
    },
    /// An operator grants all (`partial: false`) or part of what was asked.
    Approve {
        partial: bool,
    },
    Deny,
    Withdraw,
    /// A grant's probation ended without renewal.
    Expire,
    /// An operator extends a grant's expiry.
    Renew,
}

/// The status after `action`, or `None` when `action` is not allowed from `from`.
pub fn next(from: Status, action: Action) -> Option<Status> {
    use Status::*;
    match (from, action) {
        (Submitted, Action::Triage { auto_approve: true }) => Some(AutoApproved),
        (Submitted, Action::Triage { auto_approve: false }) => Some(PendingReview),
        (PendingReview, Action::Approve { partial: false }) => Some(Approved),
        (PendingReview, Action::Approve { partial: true }) => Some(PartiallyApproved),
        (PendingReview, Action::Deny) => Some(Denied),
        (Submitted | PendingReview, Action::Withdraw) => Some(Withdrawn),
        (s, Action::Expire) if s.grants() => Some(Expired),
        (s, Action::Renew) if s.grants() => Some(s),
        _ => None,
    }
}

/// The statuses from which `action` may be taken.
pub fn sources(action: Action) -> Vec<Status> {
    Status::ALL.into_iter().filter(|s| next(*s, action).is_some()).collect()
}

/// The catalogue's rules for automatic approval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Approve automatically up to the justified value × (1 + margin).
    pub margin: f64,
    /// How long an automatic grant lasts before it lapses unless renewed (0 = for good).
    pub probation_days: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { margin: 0.2, probation_days: 30 }
    }
}

/// What the policy looks at, as plain numbers of the requested dimension.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Facts {
    pub requested: f64,
    pub justified: f64,
    /// The tier's ceiling for self-service increases (`None`: no ceiling configured).
    pub ceiling: Option<f64>,
    /// Active account and app, no suspension.
    pub good_standing: bool,
}

/// Whether to approve automatically, and every reason why not.
pub fn triage(policy: &Policy, f: &Facts) -> (bool, Vec<String>) {
    let mut why_not = Vec::new();
    let allowed = f.justified * (1.0 + policy.margin);
    if f.requested > allowed {
        why_not.push(format!(
            "requested {} is above the justified {} plus the {:.0} % margin ({})",
            f.requested,
            f.justified,
            policy.margin * 100.0,
            allowed
        ));
    }
    match f.ceiling {
        Some(c) if f.requested > c => {
            why_not.push(format!("requested {} is above this verification level's ceiling {c}", f.requested))
        }
        None => why_not.push("no self-service ceiling is configured for this level and dimension".into()),
        _ => {}
    }
    if !f.good_standing {
        why_not.push("the account or app is not in good standing".into());
    }
    (why_not.is_empty(), why_not)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    #[test]
    fn every_transition_allowed_and_refused() {
        let actions = [
            Action::Triage { auto_approve: true },
            Action::Triage { auto_approve: false },
            Action::Approve { partial: false },
            Action::Approve { partial: true },
            Action::Deny,
            Action::Withdraw,
            Action::Expire,
            Action::Renew,
        ];
        let allowed = [
            (Submitted, Action::Triage { auto_approve: true }, AutoApproved),
            (Submitted, Action::Triage { auto_approve: false }, PendingReview),
            (PendingReview, Action::Approve { partial: false }, Approved),
            (PendingReview, Action::Approve { partial: true }, PartiallyApproved),
            (PendingReview, Action::Deny, Denied),
            (Submitted, Action::Withdraw, Withdrawn),
            (PendingReview, Action::Withdraw, Withdrawn),
            (AutoApproved, Action::Expire, Expired),
            (Approved, Action::Expire, Expired),
            (PartiallyApproved, Action::Expire, Expired),
            (AutoApproved, Action::Renew, AutoApproved),
            (Approved, Action::Renew, Approved),
            (PartiallyApproved, Action::Renew, PartiallyApproved),
        ];
        let mut checked = 0;
        for from in Status::ALL {
            for action in actions {
                let expected =
                    allowed.iter().find(|(f, a, _)| *f == from && *a == action).map(|(_, _, to)| *to);
                assert_eq!(next(from, action), expected, "{from:?} + {action:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 64);
        for terminal in [Denied, Withdrawn, Expired] {
            assert!(actions.iter().all(|a| next(terminal, *a).is_none()), "{terminal:?} is final");
        }
        assert_eq!(sources(Action::Withdraw), vec![Submitted, PendingReview]);
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn triage_needs_justification_ceiling_and_standing() {
        let p = Policy::default();
        let ok = Facts { requested: 110.0, justified: 100.0, ceiling: Some(500.0), good_standing: true };
        assert_eq!(triage(&p, &ok), (true, vec![]));
        let (auto, why) = triage(&p, &Facts { requested: 130.0, ..ok });
        assert!(!auto && why[0].contains("justified"));
        let (auto, why) = triage(&p, &Facts { ceiling: Some(100.0), ..ok });
        assert!(!auto && why[0].contains("ceiling"));
        let (auto, why) = triage(&p, &Facts { ceiling: None, ..ok });
        assert!(!auto && why[0].contains("no self-service ceiling"));
        let (auto, why) = triage(&p, &Facts { good_standing: false, ..ok });
        assert!(!auto && why[0].contains("standing"));
    }
}
