//! Stored answers to commands sent with an Idempotency-Key.
//!
//! A key is scoped to (tenant, token name, key). The first answer is kept for the
//! retention window; a repeat with the same request fingerprint gets it again and
//! executes nothing, a repeat with another fingerprint is refused.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::Text;

pub type Fingerprint = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Scope {
    pub tenant: Text,
    pub actor: Text,
    pub key: Text,
}

/// An answer as the client first received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub actor: Text,
    pub key: Text,
    pub fingerprint: Fingerprint,
    pub status: u16,
    pub body: Arc<[u8]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    response: StoredResponse,
    recorded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyCheck {
    /// Never seen (or expired): execute the command.
    New,
    /// Seen with the same request: answer this, execute nothing.
    Repeat(StoredResponse),
    /// Seen with a different request.
    Reused,
}

#[derive(Debug, Clone, Default)]
pub struct IdempotencyTable {
    entries: BTreeMap<Scope, Entry>,
    /// Scopes in the order they were recorded, for expiry from the front.
    recorded: VecDeque<(DateTime<Utc>, Scope)>,
}

/// Two tables are equal when they hold the same answers. The expiry queue is
/// an index derived from them whose order depends on the path taken (the
/// writer records in time order; a recovery records the ledger's answers and
/// then the responses journal's), so it is not compared.
impl PartialEq for IdempotencyTable {
    fn eq(&self, other: &IdempotencyTable) -> bool {
        self.entries == other.entries
    }
}

impl Eq for IdempotencyTable {}

impl IdempotencyTable {
    pub fn check(&self, scope: &Scope, fingerprint: &Fingerprint, now: DateTime<Utc>, retention: chrono::Duration) -> IdempotencyCheck {
        match self.entries.get(scope) {
            Some(entry) if now - entry.recorded_at < retention => {
                if entry.response.fingerprint == *fingerprint {
                    IdempotencyCheck::Repeat(entry.response.clone())
                } else {
                    IdempotencyCheck::Reused
                }
            }
            _ => IdempotencyCheck::New,
        }
    }

    /// Stores an answer. A later answer for the same scope (after the earlier one
    /// expired) replaces it; an older one (met while merging at start-up) is ignored.
    pub fn record(&mut self, tenant: &Text, response: StoredResponse, recorded_at: DateTime<Utc>) {
        let scope = Scope { tenant: tenant.clone(), actor: response.actor.clone(), key: response.key.clone() };
        if let Some(existing) = self.entries.get(&scope)
            && existing.recorded_at > recorded_at
        {
            return;
        }
        self.recorded.push_back((recorded_at, scope.clone()));
        self.entries.insert(scope, Entry { response, recorded_at });
    }

    /// Forgets at most `limit` answers recorded before `now - retention`, oldest
    /// first, so that expiry costs the writer a bounded amount of work per batch.
    /// The caller must pass a `limit` above what it records between two calls,
    /// or expiry falls behind and the table outgrows the retention window.
    pub fn expire(&mut self, now: DateTime<Utc>, retention: chrono::Duration, limit: usize) -> usize {
        let mut expired = 0;
        while expired < limit {
            match self.recorded.front() {
                Some((at, _)) if now - *at >= retention => {}
                _ => break,
            }
            let (at, scope) = self.recorded.pop_front().unwrap();
            if self.entries.get(&scope).is_some_and(|e| e.recorded_at == at) {
                self.entries.remove(&scope);
            }
            expired += 1;
        }
        expired
    }

    /// Forgets every answer recorded at or before `now - retention`, whatever
    /// the order answers were recorded in, and puts the expiry queue in time
    /// order. For a recovery, which records the answers of two logs (and of a
    /// snapshot) out of time order, so that it holds the same answers whichever
    /// path it took. Costs a sort of the table: never for the writer's batches.
    pub fn settle(&mut self, now: DateTime<Utc>, retention: chrono::Duration) {
        self.entries.retain(|_, entry| now - entry.recorded_at < retention);
        self.reindex();
    }

    /// A table holding `answers` (tenant, answer, when recorded), as a
    /// snapshot kept them; None if two are for one scope. Built in one pass:
    /// answers in scope order (a snapshot's) make the index at its right edge.
    pub fn from_answers(answers: Vec<(Text, StoredResponse, DateTime<Utc>)>) -> Option<IdempotencyTable> {
        let count = answers.len();
        let entries: BTreeMap<Scope, Entry> = answers
            .into_iter()
            .map(|(tenant, response, recorded_at)| {
                let scope = Scope { tenant, actor: response.actor.clone(), key: response.key.clone() };
                (scope, Entry { response, recorded_at })
            })
            .collect();
        if entries.len() != count {
            return None;
        }
        let mut table = IdempotencyTable { entries, recorded: VecDeque::new() };
        table.reindex();
        Some(table)
    }

    /// Rebuilds the expiry queue from the answers held, in time order.
    fn reindex(&mut self) {
        let mut recorded: Vec<(DateTime<Utc>, Scope)> = self.entries.iter().map(|(scope, e)| (e.recorded_at, scope.clone())).collect();
        // Stable: answers recorded at one instant stay in scope order.
        recorded.sort_by_key(|(at, _)| *at);
        self.recorded = recorded.into();
    }

    /// Every answer held, by scope: its tenant, the answer, when it was recorded.
    pub fn answers(&self) -> impl Iterator<Item = (&Text, &StoredResponse, DateTime<Utc>)> {
        self.entries.iter().map(|(scope, entry)| (&scope.tenant, &entry.response, entry.recorded_at))
    }

    /// The expiry queue, front first: which answer `expire` looks at next. For
    /// tests that check two copies of the table record in the same order.
    pub fn expiry_order(&self) -> impl Iterator<Item = &(DateTime<Utc>, Scope)> {
        self.recorded.iter()
    }

    /// True if an answer for `scope` is held, expired or not: recording one
    /// for it again replaces that answer rather than growing the table.
    pub fn holds(&self, scope: &Scope) -> bool {
        self.entries.contains_key(scope)
    }

    /// When the oldest answer held was recorded: the first to expire.
    pub fn recorded_first(&self) -> Option<DateTime<Utc>> {
        self.recorded.front().map(|(at, _)| *at)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn response(key: &str, fingerprint: u8) -> StoredResponse {
        StoredResponse { actor: "web".into(), key: key.into(), fingerprint: [fingerprint; 32], status: 201, body: Arc::from(&b"{}"[..]) }
    }

    #[test]
    fn replays_within_retention_refuses_other_requests_and_forgets_after() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let day = Duration::hours(24);
        let scope = Scope { tenant: "t".into(), actor: "web".into(), key: "k".into() };
        let mut table = IdempotencyTable::default();
        assert_eq!(table.check(&scope, &[1; 32], t0, day), IdempotencyCheck::New);
        table.record(&"t".into(), response("k", 1), t0);
        assert_eq!(table.check(&scope, &[1; 32], t0 + Duration::hours(23), day), IdempotencyCheck::Repeat(response("k", 1)));
        assert_eq!(table.check(&scope, &[2; 32], t0, day), IdempotencyCheck::Reused);
        let other_actor = Scope { actor: "app".into(), ..scope.clone() };
        assert_eq!(table.check(&other_actor, &[1; 32], t0, day), IdempotencyCheck::New);
        assert_eq!(table.check(&scope, &[1; 32], t0 + day, day), IdempotencyCheck::New);
        assert_eq!(table.expire(t0 + Duration::hours(1), day, 10), 0);
        assert_eq!(table.expire(t0 + day, day, 10), 1);
        assert!(table.is_empty());
    }

    /// Answers recorded out of time order (a recovery reads two logs): `expire`
    /// stops at the first live answer in the queue, `settle` forgets every
    /// expired one and leaves the queue in time order.
    #[test]
    fn settle_forgets_every_expired_answer_whatever_the_order_recorded() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let day = Duration::hours(24);
        let mut table = IdempotencyTable::default();
        table.record(&"t".into(), response("late", 1), t0 + Duration::hours(20));
        table.record(&"t".into(), response("early", 1), t0);
        let mut expired = table.clone();
        assert_eq!(expired.expire(t0 + day, day, usize::MAX), 0, "the queue's front is live");
        assert_eq!(expired.len(), 2);
        table.settle(t0 + day, day);
        assert_eq!(table.answers().map(|(_, r, _)| r.key.to_string()).collect::<Vec<_>>(), ["late"]);
        assert_eq!(table.expiry_order().map(|(at, _)| *at).collect::<Vec<_>>(), [t0 + Duration::hours(20)]);
        assert_ne!(table, expired, "tables holding other answers differ");
    }

    #[test]
    fn a_table_rebuilt_from_its_answers_is_the_same_table() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut table = IdempotencyTable::default();
        for (i, key) in ["b", "a", "c"].into_iter().enumerate() {
            table.record(&"t".into(), response(key, 1), t0 + Duration::minutes(i as i64));
        }
        let answers: Vec<_> = table.answers().map(|(tenant, response, at)| (tenant.clone(), response.clone(), at)).collect();
        let rebuilt = IdempotencyTable::from_answers(answers.clone()).unwrap();
        assert_eq!(rebuilt, table);
        assert!(rebuilt.expiry_order().eq(table.expiry_order()), "the expiry queue in time order");
        let twice = [answers.clone(), answers].concat();
        assert_eq!(IdempotencyTable::from_answers(twice), None, "two answers for one key");
    }
}
