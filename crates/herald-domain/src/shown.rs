//! User input quoted back in an error message, cut short so a long value is not echoed whole.

/// Characters of a value an error message quotes.
const MAX_SHOWN: usize = 64;

/// `s` quoted as `{:?}` would, cut after its first 64 characters.
pub fn shown(s: &str) -> String {
    match s.char_indices().nth(MAX_SHOWN) {
        None => format!("{s:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &s[..end], s.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole_and_long_ones_cut() {
        assert_eq!(shown("tts.done"), "\"tts.done\"");
        let long = "é".repeat(10_000);
        let s = shown(&long);
        assert!(s.len() < 200 && s.ends_with("(20000 bytes)"), "{s}");
    }
}
