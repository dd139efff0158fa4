//! Publishing Events for people: one per state change, never one per reconcile, shared by the
//! Tenant and PoolerFleet controllers.
//!
//! State changes are computed from an object's status as last read; since that copy can lag
//! behind the controller's own status write, [`EventLog`] also remembers the last condition
//! event published per object so a quick second reconcile does not repeat it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

/// The reporting controller of every event.
pub const REPORTING_CONTROLLER: &str = "pgfleet-operator";

/// One event to publish about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Warning for problems a person should fix, Normal otherwise.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: String,
    /// What happened, for a person.
    pub note: String,
    /// What the controller did (`Reconcile`, `Render`, `Delete`).
    pub action: &'static str,
    /// The condition type whose change this notice reports (`Accepted`, `Ready`), for
    /// [`EventLog`]; `None` for notices about what was done (never deduplicated).
    pub condition: Option<&'static str>,
}

/// The last condition event published per object (by uid) and condition type, so a reconcile
/// that still sees the old status does not publish it twice.
#[derive(Debug, Default)]
pub struct EventLog {
    last: Mutex<HashMap<LogKey, (String, String)>>,
}

/// An object's uid and a condition type.
type LogKey = (String, &'static str);

impl EventLog {
    /// Whether `notice` about the object `uid` differs from the last one recorded for its
    /// condition, recording it if so. Notices without a condition are always new.
    pub fn is_new(&self, uid: &str, notice: &Notice) -> bool {
        let Some(condition) = notice.condition else {
            return true;
        };
        let entry = (notice.reason.clone(), notice.note.clone());
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.insert((uid.to_string(), condition), entry.clone()) != Some(entry)
    }

    /// Forgets the last notice of `condition` for `uid` (the condition went back to a state
    /// that has no event, so the next problem is news again).
    pub fn reset(&self, uid: &str, condition: &'static str) {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(uid.to_string(), condition));
    }

    /// Forgets an object (deleted).
    pub fn forget(&self, uid: &str) {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(u, _), _| u != uid);
    }
}

/// Publishes `notice` about `object`. A failure is logged, not returned: events are for people,
/// and a reconcile that did its work should not be retried because one could not be recorded.
pub async fn publish<K>(recorder: &Recorder, log: &EventLog, object: &K, notice: Notice)
where
    K: Resource<DynamicType = ()>,
{
    let uid = object.meta().uid.clone().unwrap_or_default();
    if !log.is_new(&uid, &notice) {
        return;
    }
    let event = Event {
        type_: if notice.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: notice.reason.clone(),
        note: Some(truncate(&notice.note, 1024)),
        action: notice.action.to_string(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(
            kind = %K::kind(&()),
            name = ?object.meta().name,
            namespace = ?object.meta().namespace,
            reason = %notice.reason,
            %error,
            "could not publish an event"
        );
    }
}

/// `text` cut to at most `max` bytes on a character boundary (events.k8s.io limits notes to
/// 1 kB).
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_on_character_boundaries() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("ééé", 3), "é");
    }
}
