//! Localhost seccomp profiles (OCI or Docker form) as a pod names them, with a
//! capability set the fuzzer's first byte chooses.
#![no_main]

use std::collections::HashSet;
use std::str::FromStr;

use berth::spec::container::ALL_CAPABILITIES;
use berth::spec::seccomp::parse_profile;
use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::Capability;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, bytes)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let caps: HashSet<Capability> = ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(i, _)| choice & (1 << (i % 8)) != 0)
        .filter_map(|(_, name)| Capability::from_str(name).ok())
        .collect();
    let _ = parse_profile(text, &caps);
});
