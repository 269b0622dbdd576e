//! Image references as requests and config files name them. A reference that parses
//! prints as one that parses back to the same.
#![no_main]

use berth::image::reference::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reference) = Reference::parse(text) else {
        return;
    };
    let printed = reference.to_string();
    let again = Reference::parse(&printed)
        .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which does not parse: {e}"));
    assert_eq!(again.to_string(), printed, "from {text:?}");
    let _ = (
        reference.name(),
        reference.tagged(),
        reference.manifest_reference(),
    );
});
