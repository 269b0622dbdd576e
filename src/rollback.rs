//! Rollback guards for multi-step operations (STYLE.md §8): each step that made something
//! records how to undo it; on failure the undo steps run in reverse order; on success
//! `commit` forgets them. Undo steps are best effort: a failing one is logged and the
//! rest still run.

use std::future::Future;
use std::pin::Pin;

type Undo = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send>;

/// The undo steps of an operation in progress.
#[derive(Default)]
pub struct Rollback {
    steps: Vec<(&'static str, Undo)>,
}

impl Rollback {
    /// Records how to undo a step that just succeeded.
    pub fn push<F, Fut>(&mut self, what: &'static str, undo: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.steps.push((what, Box::new(move || Box::pin(undo()))));
    }

    /// The operation succeeded: keep everything.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    /// The operation failed: undo every step, last first.
    pub async fn run(mut self) {
        while let Some((what, undo)) = self.steps.pop() {
            if let Err(err) = undo().await {
                tracing::warn!(step = what, %err, "rollback step failed");
            }
        }
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        if !self.steps.is_empty() {
            let pending: Vec<&str> = self.steps.iter().map(|(what, _)| *what).collect();
            tracing::error!(
                ?pending,
                "a rollback was dropped without being run or committed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn undo_runs_in_reverse_and_commit_forgets() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut rollback = Rollback::default();
        for step in ["netns", "cni", "pause"] {
            let log = log.clone();
            rollback.push(step, move || async move {
                log.lock().unwrap().push(step);
                if step == "cni" {
                    Err("plugin failed".to_string())
                } else {
                    Ok(())
                }
            });
        }
        rollback.run().await;
        assert_eq!(*log.lock().unwrap(), ["pause", "cni", "netns"]);

        let mut committed = Rollback::default();
        let log2 = log.clone();
        committed.push("x", move || async move {
            log2.lock().unwrap().push("x");
            Ok(())
        });
        committed.commit();
        assert_eq!(log.lock().unwrap().len(), 3);
    }
}
