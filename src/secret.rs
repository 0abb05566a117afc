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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_formats_its_value() {
        let s = Secret::new("glpat-abcdefghijklmnopqrst");
        assert_eq!(format!("{s:?} {s} {:?}", Some(&s)), "Secret([REDACTED]) [REDACTED] Some(Secret([REDACTED]))");
        assert!(s.same_as("glpat-abcdefghijklmnopqrst"));
        assert!(!s.same_as("glpat-abcdefghijklmnopqrsT"));
    }
}
