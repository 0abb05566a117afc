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

    /// The secret itself. Call only to send it to GitLab, or to redact it from text
    /// ([`redact_known`]).
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

/// What a secret is replaced with.
const REDACTED: &str = "[REDACTED]";

/// Token characters after a prefix for a word to count as a token: real ones have 20 or more,
/// and `glpat-short` in prose stays as it is.
const MIN_BODY: usize = 8;

/// Every prefix GitLab gives its secrets. GitLab's token overview lists them under "Token
/// prefixes" (<https://docs.gitlab.com/security/tokens/#token-prefixes>, `doc/security/tokens/`
/// in GitLab's repository); the last few came with later releases (routable runner tokens,
/// workspaces). A prefix is found anywhere in a word, so that an administrator's instance-wide
/// prefix in front of it (`acme-glpat-…`, GitLab 18) changes nothing. A custom personal access
/// token prefix replaces `glpat-` altogether: [`redact_known`] covers such secrets, since
/// patrol knows every secret a request carries.
pub const TOKEN_PREFIXES: &[&str] = &[
    "glpat-",           // personal, impersonation, project and group access tokens; service accounts' too
    "gloas-",           // OAuth application secret
    "gldt-",            // deploy token
    "glrt-",            // runner authentication token
    "glrtr-",           // runner authentication token of a runner registered with a registration token
    "glcbt-",           // CI/CD job token
    "glptt-",           // pipeline trigger token
    "glft-",            // feed token
    "glimt-",           // incoming email token
    "glagent-",         // GitLab agent for Kubernetes token
    "glsoat-",          // SCIM token
    "glffct-",          // feature flags client token
    "gltst-",           // GitLab's test token prefix
    "glwt-",            // workspace token
    "GR1348941",        // runner registration token (deprecated)
    "_gitlab_session=", // session cookie
];

fn token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
}

/// The length of the prefix of a token that starts at `at`: a listed prefix anywhere, or, at the
/// start of a word, `gl`, up to 8 lowercase letters and `-` (a prefix GitLab may add later). The
/// second is also a hyphenated word (`global-…`), so it is a token only if what follows has a
/// digit or a capital, as random token characters do (all but once in ten million for 20).
fn prefix_at(bytes: &[u8], at: usize) -> Option<(usize, bool)> {
    let rest = &bytes[at..];
    if let Some(prefix) = TOKEN_PREFIXES.iter().find(|p| rest.starts_with(p.as_bytes())) {
        return Some((prefix.len(), false));
    }
    let word_start = at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
    if word_start && rest.starts_with(b"gl") {
        let letters = rest[2..].iter().take_while(|c| c.is_ascii_lowercase()).count();
        if letters <= 8 && rest.get(2 + letters) == Some(&b'-') {
            return Some((3 + letters, true));
        }
    }
    None
}

/// How many token characters start `rest`, if they are enough for a token; a sentence's full
/// stop after them left out (GitLab's tokens never end in one).
fn body_len(rest: &[u8], guessed: bool) -> Option<usize> {
    let run = rest.iter().position(|&c| !token_char(c)).unwrap_or(rest.len());
    let random = |body: &[u8]| body.iter().any(|c| c.is_ascii_digit() || c.is_ascii_uppercase());
    (run >= MIN_BODY && (!guessed || random(&rest[..run])))
        .then(|| rest[..run].iter().rposition(|&c| c != b'.').map_or(0, |last| last + 1))
}

/// `text` with every GitLab-token-shaped word (a prefix of [`TOKEN_PREFIXES`], or `gl…-` at the
/// start of a word, then at least 8 token characters) replaced by its prefix and `[REDACTED]`:
/// for text patrol did not build itself, such as a panic's message or GitLab's error texts.
pub fn redact(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut at) = (0, 0);
    while at < bytes.len() {
        if let Some((prefix, guessed)) = prefix_at(bytes, at) {
            if let Some(body) = body_len(&bytes[at + prefix..], guessed) {
                // Both ends are ASCII, so both are character boundaries.
                out.push_str(&text[copied..at + prefix]);
                out.push_str(REDACTED);
                at += prefix + body;
                copied = at;
                continue;
            }
        }
        at += 1;
    }
    out.push_str(&text[copied..]);
    out
}

/// Secrets this process has read that no request carries as its own (the values `discover`
/// reads from CI/CD variables): every error text is redacted against them too, whatever request
/// it came from.
static WATCHED: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Adds `value` to the secrets every error text is redacted against ([`redact_known`]).
pub fn watch(value: &str) {
    WATCHED.lock().unwrap_or_else(|e| e.into_inner()).insert(value.to_owned());
}

/// [`redact`], after every occurrence of each of `known` (the secrets a request carried: the
/// credential, a variable's new value) is replaced whole, whatever its shape: a token made
/// under a custom prefix, or an old one without any, is not token-shaped. A known secret's
/// GitLab prefix, if it has one, stays visible, as with [`redact`].
pub fn redact_known(text: &str, known: &[&str]) -> String {
    let mut text = std::borrow::Cow::Borrowed(text);
    let watched = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
    let known = known.iter().copied().chain(watched.iter().map(String::as_str));
    for secret in known.filter(|s| s.len() >= MIN_BODY) {
        let prefix = TOKEN_PREFIXES.iter().find(|p| secret.starts_with(**p)).copied().unwrap_or_default();
        if text.contains(secret) {
            text = std::borrow::Cow::Owned(text.replace(secret, &format!("{prefix}{REDACTED}")));
        }
        // An echo of the secret without its prefix (GitLab's, an instance's own, a custom one of
        // any length) gives it away as well: every tail of it still long enough to be one.
        for (at, _) in secret.char_indices().skip(1) {
            let tail = &secret[at..];
            if tail.len() < 12 {
                break;
            }
            if text.contains(tail) {
                text = std::borrow::Cow::Owned(text.replace(tail, REDACTED));
            }
        }
    }
    redact(&text)
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
    fn every_documented_gitlab_prefix_is_redacted() {
        let body = "AbCdEfGhIj0123456789";
        for prefix in TOKEN_PREFIXES {
            let text = format!("token {prefix}{body} is invalid");
            assert_eq!(redact(&text), format!("token {prefix}[REDACTED] is invalid"));
            // Behind an instance-wide prefix, in a URL, in quotes, at the end of a sentence.
            for (shown, expected) in [
                (format!("acme-{prefix}{body}"), format!("acme-{prefix}[REDACTED]")),
                (format!("/x?private_token={prefix}{body}&y=1"), format!("/x?private_token={prefix}[REDACTED]&y=1")),
                (format!("\"{prefix}{body}\""), format!("\"{prefix}[REDACTED]\"")),
                (format!("It was {prefix}{body}."), format!("It was {prefix}[REDACTED].")),
            ] {
                assert_eq!(redact(&shown), expected);
            }
        }
        // Routable tokens carry dots; a prefix GitLab adds later is caught at a word's start.
        assert_eq!(redact("glrtr-TCzqln3fiiJQr-kGBowWHW86MQpwOjEKdDozCw.01.121flyh6j ok"), "glrtr-[REDACTED] ok");
        assert_eq!(redact("(glnew-0123456789abcdef)"), "(glnew-[REDACTED])");
        // Prose is left alone.
        for prose in
            ["single-threaded-operations", "global-variables-here", "Google-authenticated users", "glpat-short"]
        {
            assert_eq!(redact(prose), prose);
        }
        assert_eq!(redact("ünïcödé glpat-AbCdEfGhIj0123456789 ü"), "ünïcödé glpat-[REDACTED] ü");
    }

    #[test]
    fn known_secrets_are_redacted_whatever_their_shape() {
        let custom = "acme_Zq3xY9pLm2Kd8Vn4Rt6W";
        let legacy = "Zq3xY9pLm2Kd8Vn4Rt6X";
        let text = format!("{custom} and {legacy}, and glpat-AbCdEfGhIj0123456789");
        assert_eq!(redact(&text), text.replace("glpat-AbCdEfGhIj0123456789", "glpat-[REDACTED]"), "not token-shaped");
        assert_eq!(
            redact_known(&text, &[custom, legacy, "glpat-AbCdEfGhIj0123456789"]),
            "[REDACTED] and [REDACTED], and glpat-[REDACTED]"
        );
        assert_eq!(redact_known("short one: abc", &["abc", ""]), "short one: abc", "too short to be a secret");
        // Found in review: an echo without the prefix, any prefix, still gives the secret away.
        assert_eq!(redact_known("bad token Zq3xY9pLm2Kd8Vn4Rt6W", &[custom]), "bad token [REDACTED]");
        assert_eq!(
            redact_known("bad token AbCdEfGhIj0123456789", &["glpat-AbCdEfGhIj0123456789"]),
            "bad token [REDACTED]"
        );
        // A value patrol read (discover) is redacted from every error text, whichever request.
        watch("corp-Wq8eR5tY2uI9oP3aS6dF");
        assert_eq!(redact_known("echo Wq8eR5tY2uI9oP3aS6dF", &[]), "echo [REDACTED]");
    }

    #[test]
    fn a_secret_never_formats_its_value() {
        let s = Secret::new("glpat-abcdefghijklmnopqrst");
        assert_eq!(format!("{s:?} {s} {:?}", Some(&s)), "Secret([REDACTED]) [REDACTED] Some(Secret([REDACTED]))");
        assert!(s.same_as("glpat-abcdefghijklmnopqrst"));
        assert!(!s.same_as("glpat-abcdefghijklmnopqrsT"));
    }
}
