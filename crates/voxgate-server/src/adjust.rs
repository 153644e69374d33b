//! Automatic adjustment, run after each usage flush: for apps whose plan enables it, measure
//! how much of each adjustable limit is in use, step the factor up or down by the plan's
//! rules (`voxgate_core::adjust`), store it (audited when it changes), and rebuild the
//! snapshot when any factor moved.
//!
//! Utilisation: concurrency is leases in use ÷ the limit, right now; rate is the requests of
//! the last complete minute ÷ (the limit per second × 60).

use crate::state::AppState;
use voxgate_core::adjust::{State, observe};
use voxgate_core::entitlement::value_of;
use voxgate_core::store::CounterKey;
use voxgate_core::{CounterStore, Dimension};
use voxgate_registry::{Actor, AdjustmentRow};

impl AppState {
    /// One round of automatic adjustment. Returns how many factors changed.
    pub async fn auto_adjust(&self) -> anyhow::Result<usize> {
        let now = self.now();
        let snapshot = self.snapshot.load();
        let mut stored: std::collections::HashMap<(String, String, String), AdjustmentRow> = self
            .registry
            .adjustments()
            .await?
            .into_iter()
            .map(|a| ((a.app_id.clone(), a.service.clone(), a.dimension.clone()), a))
            .collect();
        let mut changed = 0;
        for view in snapshot.apps.values() {
            let Some(rules) = self.catalogue.plans.get(&view.plan).and_then(|p| p.auto_adjust.as_ref())
            else {
                continue;
            };
            if view.suspended {
                continue;
            }
            for idx in self.catalogue.service_indices() {
                for dim in &rules.dimensions {
                    let (Some(base), Some(current)) =
                        (value_of(view.base.service(idx), *dim), value_of(view.limits.service(idx), *dim))
                    else {
                        continue;
                    };
                    let Some(ceiling) = self.ceiling(&view.tier, idx, *dim) else { continue };
                    let max_factor = (ceiling / base.primary()).max(1.0);
                    let service = &self.catalogue.service_def(idx).id;
                    let utilisation = match dim {
                        Dimension::Concurrency => {
                            let key = CounterKey { app: &view.id, service: idx };
                            let report =
                                self.store.peek(key, view.limits.service(idx), now, &view.time_zone).await?;
                            report
                                .get(Dimension::Concurrency)
                                .map_or(0.0, |s| s.used as f64 / (s.limit.max(1)) as f64)
                        }
                        _ => {
                            let minute = now.secs().div_euclid(60) * 60;
                            let stats =
                                self.registry.usage_stats(&view.id, service, minute - 60, minute).await?;
                            let requests = stats.allowed + stats.refused.iter().sum::<u64>();
                            requests as f64 / (current.primary() * 60.0)
                        }
                    };
                    let key = (view.id.to_string(), service.clone(), dim.as_str().to_string());
                    let before = stored.remove(&key);
                    let old = before.as_ref().map_or(State::default(), |a| State {
                        factor: a.factor,
                        high_since: a.high_since,
                        low_since: a.low_since,
                    });
                    let new = observe(rules, old, utilisation, now.millis(), max_factor);
                    if new != old {
                        let row = AdjustmentRow {
                            app_id: key.0,
                            service: key.1,
                            dimension: key.2,
                            factor: new.factor,
                            high_since: new.high_since,
                            low_since: new.low_since,
                            updated_at: now.millis(),
                        };
                        self.registry.save_adjustment(&row, old.factor, &Actor::system()).await?;
                        if new.factor != old.factor {
                            changed += 1;
                        }
                    }
                }
            }
        }
        if changed > 0 {
            self.reload().await?;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::state::AppState;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    use voxgate_core::engine::Cost;
    use voxgate_core::store::{CheckInput, CounterKey, LeaseRelease};
    use voxgate_core::{CounterStore, Timestamp};
    use voxgate_registry::{Actor, NewAccount, NewApp};

    #[tokio::test]
    async fn concurrency_grows_under_sustained_use_and_decays_after() {
        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(AtomicI64::new(Timestamp::from_secs(1_795_000_000).nanos()));
        let clock = {
            let now = now.clone();
            Arc::new(move || Timestamp::from_nanos(now.load(Ordering::SeqCst)))
        };
        let (state, _) = AppState::open(Config::for_tests(dir.path()), clock).await.unwrap();
        let account =
            NewAccount { name: "A".into(), verification_level: "individual".into(), time_zone: "UTC".into() };
        let account = state.registry.create_account(account, None, &Actor::admin()).await.unwrap();
        let new = NewApp { account_id: account.id, name: "x".into(), plan: "payg".into() };
        let (app, _) = state.registry.create_app(new, None, &Actor::admin()).await.unwrap();
        state.reload().await.unwrap();
        let asr = state.catalogue.service("asr").unwrap();
        let max = |s: &AppState| s.snapshot.load().apps[&app.id].limits.service(asr).concurrency.unwrap().max;
        assert_eq!(max(&state), 10);

        // Hold 8 of 10 leases (80 % ≥ the 70 % high-water mark).
        let view = state.snapshot.load().apps[&app.id].clone();
        let mut leases = Vec::new();
        for _ in 0..8 {
            let input = CheckInput {
                key: CounterKey { app: &app.id, service: asr },
                limits: view.limits.service(asr),
                cost: Cost::default(),
                now: state.now(),
                tz: &view.time_zone,
                lease_ttl_ms: Some(36_000_000),
            };
            leases.push(state.store.charge(input).await.unwrap().lease.unwrap().0);
        }
        let step = |s: &Arc<AppState>| {
            now.fetch_add(60_000_000_000, Ordering::SeqCst);
            let s = s.clone();
            async move { s.auto_adjust().await.unwrap() }
        };
        let mut seen = vec![max(&state)];
        for _ in 0..12 {
            step(&state).await;
            seen.push(max(&state));
        }
        // First step after 5 sustained minutes (10 → 11), the next 5 minutes later (12.1 → 12).
        assert_eq!(seen, vec![10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 12, 12], "{seen:?}");
        let snap = state.snapshot.load();
        let (_, _, steps, winner) = snap.apps[&app.id]
            .limits
            .explanation
            .limits
            .iter()
            .find(|(s, d, ..)| *s == asr && *d == voxgate_core::Dimension::Concurrency)
            .unwrap()
            .clone();
        assert_eq!(steps[winner.unwrap()].source, "adjustment:auto");

        // Release everything: use falls below 50 %; the factor decays back to 1.
        for id in leases {
            let r = state.store.release_lease(
                CounterKey { app: &app.id, service: asr },
                id,
                None,
                state.now(),
                &view.time_zone,
            );
            assert!(matches!(r.await.unwrap(), LeaseRelease::Released(_)));
        }
        for _ in 0..15 {
            step(&state).await;
        }
        assert_eq!(max(&state), 10);
        let audit = state.registry.audit_log(None).await.unwrap();
        let actions: Vec<&str> =
            audit.iter().map(|a| a.action.as_str()).filter(|a| a.starts_with("adjustment.")).collect();
        assert_eq!(
            actions,
            vec!["adjustment.raise", "adjustment.raise", "adjustment.lower", "adjustment.lower"]
        );
    }
}
