//! Credential scrubbing for everything llmtap writes out.
//!
//! Command lines and free text (error messages, captured content) can carry API keys. Keys are
//! recognised by shape (`sk-…`, `Bearer …`, AWS/Google/Groq prefixes) and by position (the value
//! after a flag whose name says key/token/secret/password). Redaction errs on the side of hiding.

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Prefixes of provider API keys and access tokens.
const KEY_PREFIXES: &[&str] = &[
    "sk-", "sk_", "sess-", "gsk_", "xai-", "AKIA", "ASIA", "AIza", "ya29.", "ghp_", "hf_", "pplx-",
    "csk-", "r8_",
];

/// Words in a flag or variable name that mean its value is a secret.
const SECRET_NAME_PARTS: &[&str] = &[
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "credential",
    "auth",
];

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '/' | '=')
}

fn looks_like_key(word: &str) -> bool {
    KEY_PREFIXES
        .iter()
        .any(|prefix| word.len() > prefix.len() && word.starts_with(prefix))
}

/// Replaces key-shaped words and `Bearer`/`Basic` credentials in free text.
pub fn scrub_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut previous_word_is_auth_scheme = false;
    while !rest.is_empty() {
        let word_len: usize = rest
            .chars()
            .take_while(|c| is_token_char(*c))
            .map(char::len_utf8)
            .sum();
        if word_len == 0 {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
            // Only whitespace may separate a scheme from its credential.
            if !c.is_whitespace() {
                previous_word_is_auth_scheme = false;
            }
            continue;
        }
        let word = &rest[..word_len];
        if previous_word_is_auth_scheme || looks_like_key(word) {
            out.push_str(REDACTED);
            previous_word_is_auth_scheme = false;
        } else {
            out.push_str(word);
            previous_word_is_auth_scheme =
                word.eq_ignore_ascii_case("bearer") || word.eq_ignore_ascii_case("basic");
        }
        rest = &rest[word_len..];
    }
    out
}

fn name_is_secret(name: &str) -> bool {
    let name = name.trim_start_matches('-').to_ascii_lowercase();
    SECRET_NAME_PARTS.iter().any(|part| name.contains(part))
}

/// Redacts a command line given as its arguments; returns the arguments joined by spaces.
///
/// `--api-key=X`, `API_KEY=X` → value redacted; `--token X` → `X` redacted; any argument that
/// looks like a key or holds `Bearer X` is scrubbed too.
pub fn redact_command_line<S: AsRef<str>>(args: &[S]) -> String {
    let mut out: Vec<String> = Vec::with_capacity(args.len());
    let mut redact_next = false;
    for arg in args {
        let arg = arg.as_ref();
        if redact_next {
            out.push(REDACTED.to_string());
            redact_next = false;
            continue;
        }
        if let Some((name, _value)) = arg.split_once('=')
            && !name.is_empty()
            && !name.contains(char::is_whitespace)
            && name_is_secret(name)
        {
            out.push(format!("{name}={REDACTED}"));
            continue;
        }
        if arg.starts_with('-') && arg.len() > 1 && name_is_secret(arg) {
            out.push(arg.to_string());
            redact_next = true;
            continue;
        }
        out.push(scrub_text(arg));
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_key_shaped_words_and_bearer_tokens() {
        let text =
            "call failed: key sk-live-123 rejected, header Authorization: Bearer abc.def-ghi";
        let scrubbed = scrub_text(text);
        assert!(!scrubbed.contains("sk-live-123"), "{scrubbed}");
        assert!(!scrubbed.contains("abc.def-ghi"), "{scrubbed}");
        assert_eq!(
            scrubbed,
            "call failed: key [REDACTED] rejected, header Authorization: Bearer [REDACTED]"
        );
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        let text = "the sk- prefix, a task-based run, Bearer. Done — ünïcode";
        assert_eq!(scrub_text(text), text);
    }

    #[test]
    fn redacts_flag_values_in_both_spellings() {
        let args = [
            "python3",
            "agent.py",
            "--api-key",
            "sk-live-123",
            "--token=abc",
            "--password",
            "hunter2",
            "OPENAI_API_KEY=xyz",
            "--model",
            "gpt-4o",
            "-H",
            "Authorization: Bearer zzz",
        ];
        let line = redact_command_line(&args);
        for secret in ["sk-live-123", "abc", "hunter2", "xyz", "zzz"] {
            assert!(!line.split(' ').any(|w| w == secret), "{secret} in {line}");
        }
        assert_eq!(
            line,
            "python3 agent.py --api-key [REDACTED] --token=[REDACTED] --password [REDACTED] \
             OPENAI_API_KEY=[REDACTED] --model gpt-4o -H Authorization: Bearer [REDACTED]"
        );
    }

    #[test]
    fn key_flag_at_the_end_is_harmless() {
        assert_eq!(redact_command_line(&["app", "--key"]), "app --key");
    }
}
