//! What GitLab's answers mean, for the engine: GitLab's message texts are matched here and
//! nowhere else, so a change in them touches one file (gitlab-api.md cites each).

use super::GitlabError;
use chrono::NaiveDate;

impl GitlabError {
    /// The latest expiry GitLab accepts, when it refused one as too late: "Expiration date must
    /// be before YYYY-MM-DD", answered 400 on a rotation or a project or group token's create
    /// and 422 on a user's or service account's token create (§11).
    pub fn expiry_limit(&self) -> Option<NaiveDate> {
        if !matches!(self.status(), Some(400 | 422)) {
            return None;
        }
        let message = self.message();
        let at = message.find("must be before ")? + "must be before ".len();
        NaiveDate::parse_from_str(message.get(at..at + 10)?, "%Y-%m-%d").ok()
    }

    /// A create refused because the key exists already: 400 `(KEY) has already been taken`
    /// (§3.1, a uniqueness rule of the model).
    pub fn already_taken(&self) -> bool {
        self.status() == Some(400) && self.message().contains("has already been taken")
    }

    /// A pipeline create refused because the branch or tag does not exist (§11: 400, the
    /// pipeline's validation error `Reference not found`).
    pub fn ref_not_found(&self) -> bool {
        self.status() == Some(400) && self.message().contains("Reference not found")
    }

    /// A value that cannot even be sent as a credential (characters an HTTP header cannot
    /// carry): whatever it is, it is no working token.
    pub fn unsendable_credential(&self) -> bool {
        matches!(self, GitlabError::Transport { detail, .. } if detail.contains(super::UNSENDABLE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, message: &str) -> GitlabError {
        GitlabError::Status {
            status,
            method: "POST".into(),
            path: "/x".into(),
            message: message.into(),
            retry_after: None,
        }
    }

    #[test]
    fn gitlabs_expiry_limit_is_read_from_its_400_and_422_messages() {
        let limit = NaiveDate::from_ymd_opt(2027, 6, 1);
        assert_eq!(answer(400, "400 Bad request - Expiration date must be before 2027-06-01").expiry_limit(), limit);
        assert_eq!(answer(422, "Expiration date must be before 2027-06-01").expiry_limit(), limit);
        assert_eq!(answer(400, "400 Bad request - Token already revoked").expiry_limit(), None);
        assert_eq!(answer(500, "Expiration date must be before 2027-06-01").expiry_limit(), None);
    }

    #[test]
    fn a_taken_key_is_told_apart_from_other_refusals() {
        assert!(answer(400, "key (PATROL_LOCK_X) has already been taken").already_taken());
        assert!(!answer(400, "value is invalid").already_taken());
        assert!(!answer(409, "has already been taken").already_taken());
    }
}
