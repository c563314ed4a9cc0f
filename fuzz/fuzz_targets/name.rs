#![no_main]
//! Name parsing never panics, and a valid name survives its own display form.
use libfuzzer_sys::fuzz_target;
use ollamafs::name::{Name, parse_bare, strip_source_suffix};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = parse_bare(s);
    // The API's :local/:cloud handling: never panics, and never yields an empty name.
    if let Ok(stripped) = strip_source_suffix(s) {
        assert!(!stripped.is_empty(), "{s:?}");
    }
    if let Ok(n) = Name::parse(s) {
        let again = Name::parse(&n.display_shortest()).expect("display form parses");
        assert!(again.eq_ignore_case(&n), "{s:?} → {} → {again}", n.display_shortest());
        let from_path = Name::from_manifest_path(&n.manifest_path()).expect("manifest path parses");
        assert_eq!(from_path, n);
    }
});
