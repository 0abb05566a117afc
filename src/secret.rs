//! The one type that holds a GitLab secret.
//!
//! A [`Secret`] cannot be printed: `Debug` and `Display` show `[REDACTED]`, it is not
//! `Serialize`, and its memory is zeroed when dropped (via `secrecy`). Reading it takes an
//! explicit [`Secret::expose`], which appears only where a secret must leave the process: an HTTP
//! header or a request body sent to GitLab.

use secrecy::{ExposeSecret, SecretString};

#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(SecretString::from(value.into()))
    }

    /// The secret itself. Call only to send it to GitLab.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Compares without exposing either side to the caller.
    pub fn same_as(&self, other: &str) -> bool {
        let (a, b) = (self.expose().as_bytes(), other.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// `text` with every GitLab-token-shaped word (`gl…-` and at least 8 token characters, as in
/// `glpat-…`, `gldt-…`, `glrt-…`) replaced by `[REDACTED]`: for text patrol did not build itself,
/// such as a panic's message.
pub fn redact(text: &str) -> String {
    let token_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("gl") {
        out.push_str(&rest[..at]);
        let candidate = &rest[at..];
        let prefix = candidate[2..].find(|c: char| !c.is_ascii_lowercase()).map(|n| n + 2);
        let body_start = prefix.filter(|&p| p <= 10 && candidate[p..].starts_with('-')).map(|p| p + 1);
        let body_len = body_start.map(|b| candidate[b..].find(|c: char| !token_char(c)).unwrap_or(candidate.len() - b));
        match (body_start, body_len) {
            (Some(b), Some(n)) if n >= 8 => {
                out.push_str(&candidate[..b]);
                out.push_str("[REDACTED]");
                rest = &candidate[b + n..];
            }
            _ => {
                out.push_str("gl");
                rest = &candidate[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Installs patrol's panic hook. A panic's message is text patrol did not build: the hook prints
/// it with every token-shaped word removed ([`redact`]), where it happened, and that it is a bug.
/// It replaces the default hook, which would print the message as it is.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!(
            "patrol: internal error{at}: {}. This is a bug in patrol; please report it. The next `patrol rotate` repairs whatever this run left unfinished.",
            redact(&payload)
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_every_token_shaped_word_and_keeps_the_rest() {
        use rand::Rng;
        let mut rng = rand::rng();
        for prefix in ["glpat-", "gldt-", "glrt-", "glsoat-", "glcbt-"] {
            for _ in 0..200 {
                let body: String = (0..rng.random_range(8..40))
                    .map(|_| {
                        let chars = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.";
                        chars[rng.random_range(0..chars.len())] as char
                    })
                    .collect();
                let secret = format!("{prefix}{body}");
                let text = format!("called `Result::unwrap()` on an `Err` value: \"{secret}\" (glob, gl-x)");
                let clean = redact(&text);
                assert!(!clean.contains(&body), "{clean}");
                assert!(clean.contains(&format!("{prefix}[REDACTED]")) && clean.ends_with("(glob, gl-x)"), "{clean}");
            }
        }
        assert_eq!(redact("global glue, glpat-short"), "global glue, glpat-short");
    }

    #[test]
    fn a_secret_never_formats_its_value() {
        let s = Secret::new("glpat-abcdefghijklmnopqrst");
        assert_eq!(format!("{s:?} {s} {:?}", Some(&s)), "Secret([REDACTED]) [REDACTED] Some(Secret([REDACTED]))");
        assert!(s.same_as("glpat-abcdefghijklmnopqrst"));
        assert!(!s.same_as("glpat-abcdefghijklmnopqrsT"));
    }
}
