//! Random identifiers: 64 hex digits, like containerd's and CRI-O's sandbox and container
//! ids, from the kernel's random source.

/// A new random 256-bit id as 64 lowercase hex digits.
pub fn random_id() -> String {
    let mut bytes = [0u8; 32];
    // getrandom only fails when the kernel has no random source at all, in which case
    // nothing on this machine can run safely.
    if let Err(err) = getrandom::fill(&mut bytes) {
        panic!("the kernel random source failed: {err}");
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_64_hex_and_distinct() {
        let a = super::random_id();
        let b = super::random_id();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
