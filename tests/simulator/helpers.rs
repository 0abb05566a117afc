//! The universe a simulator test runs in: a seeded simulator on a random port and a small client.

use patrol::simulator::seed::{SeedMember, SeedPipeline, SeedProject, SeedToken, SeedUser, SeedVariable};
use patrol::simulator::{Seed, Simulator};
use reqwest::header::HeaderMap;
use serde_json::Value;

pub const ADMIN: &str = "glpat-AdminAdminAdmin0000";
pub const ALICE: &str = "glpat-AliceAliceAlice0000";
pub const READER: &str = "glpat-ReaderReaderRead000";
pub const SELF_ROTATOR: &str = "glpat-SelfRotatorSelfRot0";
pub const DEV: &str = "glpat-DeveloperDeveloper0";

/// A response, decoded.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub struct Api {
    pub sim: Simulator,
    client: reqwest::Client,
}

impl Api {
    pub async fn start(seed: Seed) -> Api {
        let sim = Simulator::start(seed).await.unwrap_or_else(|e| panic!("simulator: {e}"));
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap_or_else(|e| panic!("client: {e}"));
        Api { sim, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.api_url())
    }

    pub async fn try_call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<Answer, reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = self.client.request(method, self.url(path)).header("PRIVATE-TOKEN", token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer { status, headers, body, text })
    }

    pub async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Answer {
        self.try_call(method, path, token, body).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call("POST", path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call("PUT", path, token, Some(body)).await
    }

    /// The id of the active token with this name.
    pub fn token_id(&self, name: &str) -> u64 {
        self.sim
            .with_world(|w| {
                let today = w.today();
                w.tokens.values().find(|t| t.name == name && t.active(today)).map(|t| t.id)
            })
            .unwrap_or_else(|| panic!("no active token named {name:?}"))
    }

    pub fn secret_of(&self, name: &str) -> String {
        let id = self.token_id(name);
        self.sim.with_world(|w| w.tokens.get(&id).map(|t| t.secret.clone())).unwrap_or_default()
    }

    pub fn user_id(&self, username: &str) -> u64 {
        self.sim
            .with_world(|w| w.user_by_username(username).map(|u| u.id))
            .unwrap_or_else(|| panic!("no user {username}"))
    }
}

pub fn token(name: &str, owner: &str, days: i64, secret: Option<&str>) -> SeedToken {
    SeedToken {
        name: name.into(),
        user: Some(owner.into()),
        expires_in_days: Some(days),
        secret: secret.map(Into::into),
        scopes: vec!["api".into()],
        ..Default::default()
    }
}

/// A small instance: an admin, a maintainer (alice) of `sec`, a developer, a read-only token, a
/// service account with a token, a project token and a group token, variables and pipelines.
pub fn standard_seed() -> Seed {
    Seed {
        users: vec![
            SeedUser { username: "root".into(), admin: true, ..Default::default() },
            SeedUser { username: "alice".into(), ..Default::default() },
            SeedUser { username: "dave".into(), ..Default::default() },
            SeedUser { username: "svc-bot".into(), service_account_of: Some("sec".into()), ..Default::default() },
        ],
        groups: vec!["sec".into(), "other".into()],
        projects: vec![
            SeedProject { path: "sec/app".into(), ci_uses: vec!["APP_TOKEN".into()], ..Default::default() },
            SeedProject { path: "other/thing".into(), ci_uses: vec![], ..Default::default() },
        ],
        members: vec![
            SeedMember { user: "alice".into(), group: Some("sec".into()), access_level: 40, ..Default::default() },
            SeedMember { user: "dave".into(), project: Some("sec/app".into()), access_level: 30, ..Default::default() },
        ],
        tokens: vec![
            token("admin", "root", 200, Some(ADMIN)),
            token("alice-main", "alice", 100, Some(ALICE)),
            SeedToken { scopes: vec!["read_api".into()], ..token("alice-reader", "alice", 100, Some(READER)) },
            SeedToken { scopes: vec!["self_rotate".into()], ..token("alice-self", "alice", 100, Some(SELF_ROTATOR)) },
            token("dave-main", "dave", 100, Some(DEV)),
            token("svc-token", "svc-bot", 5, None),
            SeedToken {
                name: "app-ci".into(),
                project: Some("sec/app".into()),
                expires_in_days: Some(20),
                access_level: Some(30),
                ..Default::default()
            },
            SeedToken {
                name: "sec-group".into(),
                group: Some("sec".into()),
                expires_in_days: Some(20),
                ..Default::default()
            },
        ],
        variables: vec![SeedVariable {
            project: Some("sec/app".into()),
            key: "APP_TOKEN".into(),
            token: Some("app-ci".into()),
            environment_scope: "*".into(),
            masked: true,
            ..Default::default()
        }],
        pipelines: vec![SeedPipeline {
            project: "sec/app".into(),
            ref_: "main".into(),
            status: "failed".into(),
            source: "schedule".into(),
            name: Some("Build pipeline".into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub const APP: &str = "/projects/sec%2Fapp";
