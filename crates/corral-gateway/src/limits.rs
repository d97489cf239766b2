//! Per-key and per-team rate limits: requests per minute and tokens per minute.
//!
//! Token buckets refilled continuously (capacity = the per-minute limit). A request takes one
//! request token and reserves `max_tokens` + an estimate of its input from the token buckets
//! of its key and its team, all or nothing; when the response is done the reservation is
//! settled against the real usage (unused tokens come back, overruns become debt).
//! State is in memory, per gateway process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::keys::{Caller, Limits};

struct Bucket {
    level: f64,
    capacity: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, capacity: f64, now: Instant) {
        let rate = capacity / 60.0;
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.capacity = capacity;
        self.level = (self.level + dt * rate).min(capacity);
        self.last = now;
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// `key` or `team`.
    pub scope: &'static str,
    /// `requests` or `tokens`.
    pub what: &'static str,
    pub limit: u64,
    pub retry_after_secs: u64,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rate limit reached: {} {} per minute for this {}; retry in {} s",
            self.limit, self.what, self.scope, self.retry_after_secs
        )
    }
}

/// What a request holds until it settles.
#[derive(Debug, Clone)]
pub struct Reservation {
    key_id: String,
    team: Option<String>,
    tokens: u64,
    key_has_tpm: bool,
    team_has_tpm: bool,
}

#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<(bool, String, bool), Bucket>>,
}

impl Limiter {
    pub fn new() -> Limiter {
        Limiter::default()
    }

    /// Admits one request reserving `tokens`, or says when to retry.
    pub fn admit(&self, caller: &Caller, tokens: u64) -> Result<Reservation, Rejection> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        // (is_team, name, is_tokens) -> (limit, amount)
        let mut wants: Vec<((bool, String, bool), u64, u64)> = Vec::new();
        let mut add = |is_team: bool, name: &str, limits: &Limits| {
            if let Some(rpm) = limits.requests_per_minute {
                wants.push(((is_team, name.to_string(), false), rpm, 1));
            }
            if let Some(tpm) = limits.tokens_per_minute {
                wants.push(((is_team, name.to_string(), true), tpm, tokens.min(tpm)));
            }
        };
        add(false, &caller.key_id, &caller.limits);
        if let Some(team) = &caller.team {
            add(true, team, &caller.team_limits);
        }
        for (id, limit, amount) in &wants {
            let bucket = buckets.entry(id.clone()).or_insert_with(|| Bucket {
                level: *limit as f64,
                capacity: *limit as f64,
                last: now,
            });
            bucket.refill(*limit as f64, now);
            if bucket.level < *amount as f64 {
                let rate = (*limit as f64 / 60.0).max(1e-9);
                let wait = ((*amount as f64 - bucket.level) / rate).ceil().max(1.0);
                return Err(Rejection {
                    scope: if id.0 { "team" } else { "key" },
                    what: if id.2 { "tokens" } else { "requests" },
                    limit: *limit,
                    retry_after_secs: wait.min(3600.0) as u64,
                });
            }
        }
        for (id, _, amount) in &wants {
            if let Some(b) = buckets.get_mut(id) {
                b.level -= *amount as f64;
            }
        }
        Ok(Reservation {
            key_id: caller.key_id.clone(),
            team: caller.team.clone(),
            tokens,
            key_has_tpm: caller.limits.tokens_per_minute.is_some(),
            team_has_tpm: caller.team.is_some() && caller.team_limits.tokens_per_minute.is_some(),
        })
    }

    /// Replaces the reservation by the tokens really used.
    pub fn settle(&self, reservation: &Reservation, used: u64) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut adjust = |id: (bool, String, bool)| {
            if let Some(b) = buckets.get_mut(&id) {
                let reserved = (reservation.tokens as f64).min(b.capacity);
                b.level = (b.level + reserved - used as f64).min(b.capacity);
            }
        };
        if reservation.key_has_tpm {
            adjust((false, reservation.key_id.clone(), true));
        }
        if let (true, Some(team)) = (reservation.team_has_tpm, &reservation.team) {
            adjust((true, team.clone(), true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(rpm: Option<u64>, tpm: Option<u64>, team_rpm: Option<u64>) -> Caller {
        Caller {
            key_id: "k".into(),
            owner: "o".into(),
            team: Some("t".into()),
            models: vec!["*".into()],
            limits: Limits {
                requests_per_minute: rpm,
                tokens_per_minute: tpm,
            },
            team_limits: Limits {
                requests_per_minute: team_rpm,
                tokens_per_minute: None,
            },
        }
    }

    #[test]
    fn requests_per_minute() {
        let l = Limiter::new();
        let c = caller(Some(2), None, None);
        assert!(l.admit(&c, 10).is_ok());
        assert!(l.admit(&c, 10).is_ok());
        let r = l.admit(&c, 10).unwrap_err();
        assert_eq!((r.scope, r.what, r.limit), ("key", "requests", 2));
        assert!(r.retry_after_secs >= 1);
    }

    #[test]
    fn tokens_are_reserved_then_settled() {
        let l = Limiter::new();
        let c = caller(None, Some(1000), None);
        let r1 = l.admit(&c, 600).unwrap();
        assert_eq!(l.admit(&c, 600).unwrap_err().what, "tokens");
        l.settle(&r1, 100);
        assert!(l.admit(&c, 600).is_ok());
    }

    #[test]
    fn team_limits_bind_every_key_of_the_team() {
        let l = Limiter::new();
        let a = caller(None, None, Some(1));
        let mut b = a.clone();
        b.key_id = "other".into();
        assert!(l.admit(&a, 1).is_ok());
        assert_eq!(l.admit(&b, 1).unwrap_err().scope, "team");
    }
}
