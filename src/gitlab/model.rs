//! What patrol reads from GitLab's answers (gitlab-api.md §1.1, §2, §3.1, §4). Fields GitLab may
//! leave out are optional, so an older or newer GitLab still decodes.

use crate::secret::Secret;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer};

/// A personal, project, group or service-account token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiToken {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default)]
    pub active: bool,
    pub expires_at: Option<NaiveDate>,
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub user_id: Option<u64>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub description: Option<String>,
    pub access_level: Option<u8>,
}

/// A rotate or create answer: the token and, exactly once, its secret.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: ApiToken,
    pub secret: Secret,
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl<'de> Deserialize<'de> for IssuedToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IssuedToken, D::Error> {
        #[derive(Deserialize)]
        struct WithSecret {
            #[serde(flatten)]
            token: ApiToken,
            token_secret_field: Secret,
        }
        // GitLab names the secret `token`, which would clash with the flattened struct's name.
        let mut value = serde_json::Value::deserialize(d)?;
        if let Some(obj) = value.as_object_mut() {
            if let Some(secret) = obj.remove("token") {
                obj.insert("token_secret_field".into(), secret);
            }
        }
        let parsed: WithSecret = serde_json::from_value(value).map_err(serde::de::Error::custom)?;
        Ok(IssuedToken { token: parsed.token, secret: parsed.token_secret_field })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiVariable {
    pub key: String,
    /// `null` for hidden variables (§3.1).
    pub value: Option<Secret>,
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub masked: bool,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub raw: bool,
    #[serde(default = "star")]
    pub environment_scope: String,
    pub description: Option<String>,
}

fn star() -> String {
    "*".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiPipeline {
    pub id: u64,
    pub status: String,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub web_url: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl ApiPipeline {
    /// Whether GitLab will not change this pipeline's status any more by itself.
    pub fn finished(&self) -> bool {
        matches!(self.status.as_str(), "success" | "failed" | "canceled" | "skipped" | "manual")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiUser {
    pub id: u64,
    pub username: String,
    #[serde(default)]
    pub is_admin: bool,
    #[serde(default)]
    pub bot: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiNamed {
    pub id: u64,
    #[serde(alias = "path_with_namespace")]
    pub full_path: String,
    /// A project's default branch (§16); `None` for a group, or a project with an empty
    /// repository.
    #[serde(default)]
    pub default_branch: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotate_answer_keeps_its_secret_out_of_debug() {
        let body = r#"{"id":42,"name":"Rotated Token","revoked":false,"created_at":"2023-08-01T15:00:00.000Z",
            "scopes":["api"],"user_id":1337,"last_used_at":null,"active":true,"expires_at":"2023-08-15","token":"s3cr3t-value"}"#;
        let issued: IssuedToken = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(issued.token.id, 42);
        assert!(issued.secret.same_as("s3cr3t-value"));
        assert!(!format!("{issued:?}").contains("s3cr3t"));
    }
}

/// An issue (§11): what the tracking-issue step needs of it.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiIssue {
    pub iid: u64,
    pub title: String,
    pub web_url: Option<String>,
}
