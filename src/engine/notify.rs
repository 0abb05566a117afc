//! The runbook's last step: a tracking issue per failing token (`[notify] project`).
//!
//! One listing of the open issues carrying patrol's labels per run; then, per token:
//! - failed, no open issue → open one titled with the token id, saying what happened, what patrol
//!   did and what a person should do;
//! - failed, an open issue → comment with this run's result;
//! - healthy again (rotated, repaired or unchanged), an open issue → comment and close it.
//!
//! Issue texts are built from the report only, which never holds a secret.

use crate::config::NotifySection;
use crate::gitlab::model::ApiIssue;
use crate::gitlab::Client;
use crate::report::{describe, Outcome, TokenReport};

/// The title that ties an issue to a managed token.
pub fn title(token_id: &str) -> String {
    format!("patrol: token {token_id} needs attention")
}

/// What was done, one line each, for stdout; problems with the issues themselves are returned
/// as warnings and never change the run's exit code.
#[derive(Debug, Default)]
pub struct Notified {
    pub lines: Vec<String>,
    pub warnings: Vec<String>,
}

pub async fn notify(client: &Client, section: &NotifySection, reports: &[TokenReport], run: &str) -> Notified {
    let mut out = Notified::default();
    let open: Vec<ApiIssue> = match client.open_issues(&section.project, &section.labels).await {
        Ok(issues) => issues,
        Err(e) => {
            out.warnings.push(format!(
                "cannot list the tracking issues of {}: {e}. Check [notify] project, and that the credential may read its issues.",
                section.project
            ));
            return out;
        }
    };
    for r in reports {
        let wanted = title(&r.id);
        let existing = open.iter().find(|i| i.title == wanted);
        let result = match (r.outcome, existing) {
            (Outcome::Failed, None) => client
                .create_issue(&section.project, &wanted, &failure_text(r, run), &section.labels)
                .await
                .map(|i| format!("{}: opened tracking issue {}", r.id, link(&i))),
            (Outcome::Failed, Some(i)) => client
                .comment_issue(&section.project, i.iid, &failure_text(r, run))
                .await
                .map(|()| format!("{}: commented on tracking issue {}", r.id, link(i))),
            (Outcome::Rotated | Outcome::Created | Outcome::Repaired | Outcome::Unchanged, Some(i)) => {
                let comment = format!(
                    "Resolved by {run}: token `{}` is **{}** ({}).\n\n```\n{}\n```\n\nClosing this issue.",
                    r.id,
                    r.outcome.as_str(),
                    r.reason,
                    describe(r)
                );
                match client.comment_issue(&section.project, i.iid, &comment).await {
                    Ok(()) => client
                        .close_issue(&section.project, i.iid)
                        .await
                        .map(|()| format!("{}: closed tracking issue {}", r.id, link(i))),
                    Err(e) => Err(e),
                }
            }
            _ => continue,
        };
        match result {
            Ok(line) => out.lines.push(line),
            Err(e) => out.warnings.push(format!(
                "cannot update the tracking issue for token {} in {}: {e}. The token's own result above stands.",
                r.id, section.project
            )),
        }
    }
    out
}

fn link(i: &ApiIssue) -> String {
    i.web_url.clone().unwrap_or_else(|| format!("#{}", i.iid))
}

fn failure_text(r: &TokenReport, run: &str) -> String {
    format!(
        "**patrol could not finish token `{id}`** ({kind} token `{name}`) in {run}.\n\n\
         **What happened and what to do**\n\n{error}\n\n\
         **What patrol did**\n\n```\n{details}\n```\n\n\
         patrol comments here on every run until the token is healthy, then closes this issue. \
         To retry now: `patrol rotate --only {id}` (or run the pipeline's emergency job with \
         `PATROL_FORCE={id}` if the token must be replaced even though it is not due).",
        id = r.id,
        kind = r.kind,
        name = r.name,
        error = r.error.as_deref().unwrap_or("(no error recorded)"),
        details = describe(r),
    )
}
