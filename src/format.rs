//! Numbers for people, in Ollama's format.

/// Ollama's `format.HumanBytes` (decimal units).
pub fn human_bytes(b: i64) -> String {
    let units = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB")];
    for (size, unit) in units {
        if b as f64 >= size {
            let v = b as f64 / size;
            return if v >= 10.0 {
                format!("{} {unit}", v as i64)
            } else if v != v.trunc() {
                format!("{v:.1} {unit}")
            } else {
                format!("{} {unit}", v as i64)
            };
        }
    }
    format!("{b} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_like_ollama() {
        assert_eq!(human_bytes(2019393189), "2.0 GB");
        assert_eq!(human_bytes(2_000_000_000), "2 GB");
        assert_eq!(human_bytes(15_500_000_000), "15 GB");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500), "1.5 KB");
    }
}
