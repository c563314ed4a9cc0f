#![no_main]
//! The GGUF header reader never panics or allocates without bound on hostile input.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = ollamafs::gguf::read_header(data) {
        let _ = ollamafs::gguf::human_number(h.parameter_count);
        let _ = h.file_type_name();
        let _ = h.architecture();
    }
});
