//! `patrol audit`: every token the credential can see that expires within N days (or expired in
//! the last N days), with which managed token it is.

use crate::config::{Config, Owner, TokenKind};
use crate::gitlab::model::ApiToken;
use crate::gitlab::{Client, GitlabError, TokenHome};
use chrono::{Duration, NaiveDate};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// A token's kind and the username or path that owns it.
type Ownership = (TokenKind, String);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub token_id: u64,
    pub name: String,
    pub kind: TokenKind,
    pub owner: String,
    pub expires_at: Option<NaiveDate>,
    pub days_left: Option<i64>,
    pub active: bool,
    pub scopes: Vec<String>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub managed: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub schema_version: u32,
    pub within_days: u32,
    pub tokens: Vec<AuditEntry>,
}

/// `expires_before` is strict and `expires_after` inclusive (§10): this window is
/// [today − N, today + N].
fn window(today: NaiveDate, days: u32) -> Vec<(&'static str, String)> {
    let n = Duration::days(i64::from(days));
    vec![
        ("revoked", "false".into()),
        ("expires_after", (today - n).to_string()),
        ("expires_before", (today + n + Duration::days(1)).to_string()),
    ]
}

pub async fn audit(
    client: &Client,
    config: Option<&Config>,
    group: Option<&str>,
    today: NaiveDate,
    days: u32,
) -> Result<AuditReport, GitlabError> {
    let filters = window(today, days);
    let mut found: Vec<(TokenKind, String, ApiToken)> = Vec::new();
    match group {
        None => {
            let (tokens, owners) = personal_tokens_and_owners(client, &filters).await?;
            for t in tokens {
                let (kind, owner) =
                    t.user_id.and_then(|u| owners.get(&u).cloned()).unwrap_or((TokenKind::Personal, "?".into()));
                found.push((kind, owner, t));
            }
        }
        Some(path) => {
            let mut groups = vec![path.to_owned()];
            groups.extend(client.descendant_groups(path).await?.into_iter().map(|g| g.full_path));
            for g in &groups {
                for t in client.list_tokens(&TokenHome::Group(g.clone()), &filters).await? {
                    found.push((TokenKind::Group, g.clone(), t));
                }
            }
            for p in client.group_projects(path).await? {
                for t in client.list_tokens(&TokenHome::Project(p.full_path.clone()), &filters).await? {
                    found.push((TokenKind::Project, p.full_path.clone(), t));
                }
            }
            if !path.contains('/') {
                for account in client.service_accounts(path).await? {
                    let home = TokenHome::ServiceAccount { group: path.to_owned(), user_id: account.id };
                    for t in client.list_tokens(&home, &filters).await? {
                        found.push((TokenKind::ServiceAccount, account.username.clone(), t));
                    }
                }
            }
        }
    }
    let index = ManagedIndex::new(config);
    let mut tokens: Vec<AuditEntry> = found
        .into_iter()
        .map(|(kind, owner, t)| AuditEntry {
            managed: index.get(kind, &owner, &t.name),
            token_id: t.id,
            days_left: t.expires_at.map(|d| (d - today).num_days()),
            name: t.name,
            kind,
            owner,
            expires_at: t.expires_at,
            active: t.active,
            scopes: t.scopes,
            last_used_at: t.last_used_at,
        })
        .collect();
    tokens.sort_by_key(|e| (e.expires_at.unwrap_or(NaiveDate::MAX), e.token_id));
    Ok(AuditReport { schema_version: 1, within_days: days, tokens })
}

/// Lists personal tokens and looks up each new owner as soon as its first page arrives, so the
/// owner lookups share the request slots with the remaining pages instead of waiting for the last
/// one. The client's own limit bounds how many requests are in flight.
async fn personal_tokens_and_owners(
    client: &Client,
    filters: &[(&str, String)],
) -> Result<(Vec<ApiToken>, HashMap<u64, Ownership>), GitlabError> {
    let (pages_tx, mut pages) = tokio::sync::mpsc::unbounded_channel::<Vec<ApiToken>>();
    let listing = client.each_personal_token_page(filters, move |page| pages_tx.send(page).is_ok());
    let resolving = async move {
        let mut tokens = Vec::new();
        let mut seen = HashSet::new();
        let mut owners = HashMap::new();
        let mut lookups = FuturesUnordered::new();
        let mut listing_open = true;
        while listing_open || !lookups.is_empty() {
            tokio::select! {
                page = pages.recv(), if listing_open => match page {
                    Some(page) => {
                        for id in page.iter().filter_map(|t| t.user_id).filter(|id| seen.insert(*id)) {
                            lookups.push(async move { (id, owner_of(client, id).await) });
                        }
                        tokens.extend(page);
                    }
                    None => listing_open = false,
                },
                Some((id, owner)) = lookups.next(), if !lookups.is_empty() => {
                    owners.insert(id, owner?);
                }
            }
        }
        Ok::<_, GitlabError>((tokens, owners))
    };
    let (listed, resolved) = tokio::join!(listing, resolving);
    listed?;
    resolved
}

/// A token's kind and owner from its user: bot users of project and group tokens are named
/// `project_<id>_bot_…` and `group_<id>_bot_…` (§2 "Bot user"); other bots are service accounts.
async fn owner_of(client: &Client, user_id: u64) -> Result<Ownership, GitlabError> {
    let user = client.user(user_id).await?;
    let resource = |prefix: &str| {
        user.username.strip_prefix(prefix).and_then(|rest| rest.split_once("_bot")).map(|(id, _)| id.to_owned())
    };
    if let Some(project) = resource("project_") {
        return Ok((TokenKind::Project, client.project(&project).await?.full_path));
    }
    if let Some(group) = resource("group_") {
        return Ok((TokenKind::Group, client.group(&group).await?.full_path));
    }
    let kind = if user.bot { TokenKind::ServiceAccount } else { TokenKind::Personal };
    Ok((kind, user.username))
}

/// Which managed token each (kind, owner, name) is, built once: the audit of a large fleet looks up
/// every token it lists, so a scan of the config per token would cost N × M comparisons.
pub(crate) struct ManagedIndex<'c>(HashMap<(TokenKind, String, &'c str), &'c str>);

impl<'c> ManagedIndex<'c> {
    pub(crate) fn new(config: Option<&'c Config>) -> Self {
        let mut map = HashMap::new();
        for t in config.map(|c| c.tokens.as_slice()).unwrap_or_default() {
            let owner = match &t.owner {
                Owner::User(u) | Owner::ServiceAccount { user: u, .. } => u,
                Owner::Project(p) | Owner::Group(p) => p,
            };
            map.entry((t.kind, owner.to_ascii_lowercase(), t.name.as_str())).or_insert(t.id.as_str());
        }
        Self(map)
    }

    /// A service account's token may be configured as `personal` (it is a user's token).
    pub(crate) fn get(&self, kind: TokenKind, owner: &str, name: &str) -> Option<String> {
        let owner = owner.to_ascii_lowercase();
        let mut kinds = vec![kind];
        if kind == TokenKind::ServiceAccount {
            kinds.push(TokenKind::Personal);
        }
        kinds.into_iter().find_map(|k| self.0.get(&(k, owner.clone(), name)).map(|id| (*id).to_owned()))
    }
}
