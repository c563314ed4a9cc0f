#![no_main]
//! Manifest parsing never panics; what parses re-serialises to bytes that parse the same.
use libfuzzer_sys::fuzz_target;
use ollamafs::store::manifest::{Manifest, model_id};

fuzz_target!(|data: &[u8]| {
    let _ = model_id(data);
    if let Ok(m) = Manifest::parse(data) {
        let bytes = m.to_go_json();
        let again = Manifest::parse(&bytes).expect("our own output parses");
        assert_eq!(again, m);
        let _ = m.check_digests();
        let _ = ollamafs::layout::files(&m);
    }
});
