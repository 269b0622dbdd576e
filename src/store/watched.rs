//! The records whose process's end the daemon hears of as it happens (a pidfd it polls,
//! [`crate::events::ProcessExit`]): listings need not look for that end themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Ids under watch, each with how many watchers it has (a recovery may watch a process
/// a second time).
#[derive(Debug, Default, Clone)]
pub struct Watched(Arc<Mutex<HashMap<String, usize>>>);

impl Watched {
    fn ids(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `id` as watched until the mark is dropped.
    pub fn mark(&self, id: &str) -> WatchMark {
        *self.ids().entry(id.to_string()).or_insert(0) += 1;
        WatchMark {
            watched: self.clone(),
            id: id.to_string(),
        }
    }

    /// Whether `id` is watched.
    pub fn contains(&self, id: &str) -> bool {
        self.ids().contains_key(id)
    }

    /// `f` with a test of whether an id is watched, the set locked once for all of them.
    pub fn with<T>(&self, f: impl FnOnce(&dyn Fn(&str) -> bool) -> T) -> T {
        let ids = self.ids();
        f(&|id| ids.contains_key(id))
    }
}

/// One watcher's mark: while it lives, its id is watched.
#[derive(Debug)]
pub struct WatchMark {
    watched: Watched,
    id: String,
}

impl Drop for WatchMark {
    fn drop(&mut self) {
        let mut ids = self.watched.ids();
        if let Some(count) = ids.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                ids.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Watched;

    #[test]
    fn an_id_is_watched_while_any_of_its_marks_lives() {
        let watched = Watched::default();
        let first = watched.mark("a");
        let second = watched.mark("a");
        assert!(watched.with(|is| is("a") && !is("b")));
        drop(first);
        assert!(watched.contains("a"));
        drop(second);
        assert!(!watched.with(|is| is("a")));
    }
}
