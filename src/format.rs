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

/// Ollama's `format.HumanNumber`, used for `model_type` (parameter size).
pub fn human_number(n: u64) -> String {
    const THOUSAND: f64 = 1e3;
    const MILLION: f64 = 1e6;
    const BILLION: f64 = 1e9;
    let f = n as f64;
    if f >= BILLION {
        let v = f / BILLION;
        if v == v.floor() { format!("{v:.0}B") } else { format!("{v:.1}B") }
    } else if f >= MILLION {
        let v = f / MILLION;
        if v == v.floor() { format!("{v:.0}M") } else { format!("{v:.2}M") }
    } else if f >= THOUSAND {
        format!("{:.0}K", f / THOUSAND)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts_like_ollama() {
        let cases = [
            (human_bytes(2019393189), "2.0 GB"),
            (human_bytes(2_000_000_000), "2 GB"),
            (human_bytes(15_500_000_000), "15 GB"),
            (human_bytes(999), "999 B"),
            (human_bytes(1_500), "1.5 KB"),
            (human_number(3_212_749_888), "3.2B"),
            (human_number(8_000_000_000), "8B"),
            (human_number(1_500_000), "1.50M"),
            (human_number(2_000_000), "2M"),
            (human_number(12_345), "12K"),
            (human_number(999), "999"),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
