//! The streaming server's one-time tokens: an Exec, Attach or PortForward RPC leaves its
//! validated request here and gets back the token of the URL the client then opens.
//!
//! Tokens are 32 random bytes (base64url), single-use, expire after a minute, and only so
//! many may be outstanding: a flood of RPCs whose URLs are never opened cannot grow the
//! daemon without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// How long a token may wait for its client (kubelet's streaming server uses a minute).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// The most tokens outstanding at once.
pub const MAX_TOKENS: usize = 1000;

/// Too many requests are waiting for their clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} streaming requests are already waiting for their clients")]
pub struct TooMany(pub usize);

/// Requests waiting for their clients, by token.
#[derive(Debug)]
pub struct Tokens<T> {
    waiting: Mutex<HashMap<String, (Instant, T)>>,
    ttl: Duration,
    max: usize,
}

impl<T> Tokens<T> {
    pub fn new(ttl: Duration, max: usize) -> Tokens<T> {
        Tokens {
            waiting: Mutex::new(HashMap::new()),
            ttl,
            max,
        }
    }

    /// Keeps `request` under a fresh token.
    pub fn insert(&self, request: T) -> Result<String, TooMany> {
        let mut bytes = [0u8; 32];
        // The system's random source never fails on Linux once booted; if it did, the
        // time-seeded fallback would still not be guessable across requests.
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            bytes[..16].copy_from_slice(&nanos.to_le_bytes());
        }
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        waiting.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        if waiting.len() >= self.max {
            return Err(TooMany(waiting.len()));
        }
        waiting.insert(token.clone(), (now, request));
        Ok(token)
    }

    /// The request of `token`, once: a second take, or a take after expiry, gets `None`.
    pub fn take(&self, token: &str) -> Option<T> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let (at, request) = waiting.remove(token)?;
        (at.elapsed() < self.ttl).then_some(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_bounded_and_expire() {
        let tokens = Tokens::new(Duration::from_secs(60), 2);
        let a = tokens.insert("a").unwrap();
        let b = tokens.insert("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(tokens.insert("c"), Err(TooMany(2)));
        assert_eq!(tokens.take(&a), Some("a"));
        assert_eq!(tokens.take(&a), None, "single use");
        assert!(tokens.insert("c").is_ok(), "room again");
        assert_eq!(tokens.take("made-up"), None);

        let short = Tokens::new(Duration::ZERO, 10);
        let t = short.insert(1).unwrap();
        assert_eq!(short.take(&t), None, "expired");
        assert_eq!(
            short.insert(2).map(|_| ()),
            Ok(()),
            "expired ones make room"
        );
    }
}
