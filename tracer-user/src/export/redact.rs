//! Credential scrubbing for everything llmtap writes out.
//!
//! Command lines and free text (error messages, captured content) can carry API keys. Keys are
//! recognised by shape (`sk-…`, `Bearer …`, AWS/Google/Groq prefixes) and by position (the value
//! after a flag whose name says key/token/secret/password, a credential header's value, the
//! password of `-u user:pass` or of a URL's `user:pass@`, mysql's `-pSECRET`). Redaction errs on
//! the side of hiding.

use crate::credentials::is_credential_header;

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

/// Flags whose value is `user:password` (curl, wget and friends).
const USER_PASSWORD_FLAGS: &[&str] = &["-u", "--user", "-U", "--proxy-user"];

/// `user:password` → `user:[REDACTED]`; a value without a password is kept.
fn redact_user_password(value: &str) -> String {
    match value.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None => value.to_string(),
    }
}

/// `Name: value` (a header as curl's `-H` takes it) whose name is a credential header or says
/// key/token/secret: `Name: [REDACTED]`.
fn redact_header_arg(arg: &str) -> Option<String> {
    let (name, _value) = arg.split_once(':')?;
    let is_header_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    (is_header_name && (is_credential_header(name) || name_is_secret(name)))
        .then(|| format!("{name}: {REDACTED}"))
}

/// The password of every `scheme://user:password@host` in `arg` redacted.
fn redact_url_credentials(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        rest = match authority.rfind('@') {
            Some(at) => {
                out.push_str(&redact_user_password(&authority[..at]));
                &tail[at..]
            }
            None => tail,
        };
    }
    out.push_str(rest);
    out
}

/// A URI as exported (`mcp.resource.uri`): the password of `scheme://user:password@host`,
/// the values of credential query parameters (`?api_key=…`) and key-shaped words redacted.
pub fn scrub_url(uri: &str) -> String {
    let uri = redact_url_credentials(uri);
    let (base, query) = match uri.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (uri.as_str(), None),
    };
    let mut out = scrub_text(base);
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _))
                    if crate::credentials::CREDENTIAL_QUERY_PARAMS
                        .iter()
                        .any(|p| p.eq_ignore_ascii_case(name)) =>
                {
                    format!("{name}={REDACTED}")
                }
                _ => scrub_text(pair),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

/// What the previous argument says of the next one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NextArg {
    Plain,
    Secret,
    UserPassword,
}

/// Redacts a command line given as its arguments; returns the arguments joined by spaces.
///
/// `--api-key=X`, `API_KEY=X` → value redacted; `--token X` → `X` redacted; `-H "x-api-key: X"`
/// → header value redacted; `-u user:X`, `-uuser:X`, `--user=user:X` and `proto://user:X@host`
/// → password redacted; `-pX` → `X` redacted; any argument that looks like a key or holds
/// `Bearer X` is scrubbed too.
pub fn redact_command_line<S: AsRef<str>>(args: &[S]) -> String {
    let mut out: Vec<String> = Vec::with_capacity(args.len());
    let mut next = NextArg::Plain;
    for arg in args {
        let arg = arg.as_ref();
        match std::mem::replace(&mut next, NextArg::Plain) {
            NextArg::Secret => {
                out.push(REDACTED.to_string());
                continue;
            }
            NextArg::UserPassword => {
                out.push(redact_user_password(arg));
                continue;
            }
            NextArg::Plain => {}
        }
        if USER_PASSWORD_FLAGS.contains(&arg) {
            out.push(arg.to_string());
            next = NextArg::UserPassword;
            continue;
        }
        if let Some((name, value)) = arg.split_once('=')
            && !name.is_empty()
            && !name.contains(char::is_whitespace)
        {
            if name_is_secret(name) {
                out.push(format!("{name}={REDACTED}"));
                continue;
            }
            if USER_PASSWORD_FLAGS.contains(&name) {
                out.push(format!("{name}={}", redact_user_password(value)));
                continue;
            }
        }
        if !arg.starts_with("--") && arg.len() > 2 {
            // Values joined to short options: `-uuser:pass`, mysql's `-pPASSWORD`.
            if let Some(value) = arg.strip_prefix("-u").or_else(|| arg.strip_prefix("-U")) {
                out.push(format!("{}{}", &arg[..2], redact_user_password(value)));
                continue;
            }
            if arg.starts_with("-p") {
                out.push(format!("-p{REDACTED}"));
                // `-password X` (one-dash long option) hides its value in the next argument.
                if name_is_secret(arg) {
                    next = NextArg::Secret;
                }
                continue;
            }
        }
        if arg.starts_with('-') && arg.len() > 1 && name_is_secret(arg) {
            out.push(arg.to_string());
            next = NextArg::Secret;
            continue;
        }
        if let Some(header) = redact_header_arg(arg) {
            out.push(header);
            continue;
        }
        out.push(scrub_text(&redact_url_credentials(arg)));
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
             OPENAI_API_KEY=[REDACTED] --model gpt-4o -H Authorization: [REDACTED]"
        );
    }

    #[test]
    fn resource_uris_lose_their_credentials() {
        let out = scrub_url("postgres://app:hunter2@db:5432/customers?api_key=abc123&schema=x");
        assert!(!out.contains("hunter2") && !out.contains("abc123"), "{out}");
        assert!(
            out.contains("db:5432/customers") && out.contains("schema=x"),
            "{out}"
        );
        assert_eq!(
            scrub_url("file:///home/u/report.pdf"),
            "file:///home/u/report.pdf"
        );
    }

    #[test]
    fn redacts_url_credentials_header_values_and_joined_passwords() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["psql", "postgres://app:s3cret@db.internal:5432/prod"],
                "psql postgres://app:[REDACTED]@db.internal:5432/prod",
            ),
            (
                &["worker", "--broker=amqp://guest:guestpw@mq/vhost"],
                "worker --broker=amqp://guest:[REDACTED]@mq/vhost",
            ),
            (
                &[
                    "curl",
                    "-H",
                    "x-api-key: abc123",
                    "https://api.anthropic.com",
                ],
                "curl -H x-api-key: [REDACTED] https://api.anthropic.com",
            ),
            (
                &["curl", "-H", "Authorization: token123"],
                "curl -H Authorization: [REDACTED]",
            ),
            (
                &["curl", "--header", "X-Auth-Token:tok456"],
                "curl --header X-Auth-Token: [REDACTED]",
            ),
            (
                &["curl", "-u", "alice:pa55", "https://h"],
                "curl -u alice:[REDACTED] https://h",
            ),
            (
                &["curl", "-ualice:pa55", "--user=bob:pw2"],
                "curl -ualice:[REDACTED] --user=bob:[REDACTED]",
            ),
            (
                &["mysql", "-h", "db", "-uroot", "-pHunter2x", "app"],
                "mysql -h db -uroot -p[REDACTED] app",
            ),
            (
                &["java", "-jar", "t.jar", "-password", "hunter3"],
                "java -jar t.jar -p[REDACTED] [REDACTED]",
            ),
        ];
        for (args, expected) in cases {
            let line = redact_command_line(args);
            assert_eq!(&line, expected, "{args:?}");
            for secret in [
                "s3cret", "guestpw", "abc123", "token123", "tok456", "pa55", "pw2", "Hunter2x",
                "hunter3",
            ] {
                assert!(!line.contains(secret), "{secret} in {line}");
            }
        }
        // Not secrets: a URL without credentials, a port option, a plain header.
        assert_eq!(
            redact_command_line(&["curl", "-p", "https://h:8443/x", "-H", "accept: json"]),
            "curl -p https://h:8443/x -H accept: json"
        );
    }

    #[test]
    fn key_flag_at_the_end_is_harmless() {
        assert_eq!(redact_command_line(&["app", "--key"]), "app --key");
    }
}
