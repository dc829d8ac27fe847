//! Token estimation for responses that carry no usage (opt-in, flagged `usage.estimated`).
//!
//! OpenAI-family models are counted with their own BPE (`tiktoken-rs`, data embedded in the
//! crate, no network). Other providers' tokenizers are not public or not embeddable, so their
//! text is counted with `o200k_base` as an approximation; the record says `estimated` either way.

/// Number of tokens `text` has for `model`.
pub fn count_tokens(model: Option<&str>, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    let bpe = model
        .and_then(|m| tiktoken_rs::bpe_for_model(m).ok())
        .unwrap_or_else(tiktoken_rs::o200k_base_singleton);
    bpe.encode_ordinary(text).len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_plausible() {
        assert_eq!(count_tokens(Some("gpt-4o"), ""), 0);
        let n = count_tokens(Some("gpt-4o"), "Hello, world! How are you today?");
        assert!((5..=12).contains(&n), "{n}");
        // Unknown model falls back to o200k and still counts.
        assert!(count_tokens(Some("claude-x"), "one two three") >= 3);
    }
}
