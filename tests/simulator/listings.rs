//! `GET /projects` and `GET /groups` (docs/gitlab-api.md §16), which `patrol discover` walks:
//! what an administrator and a member see, `min_access_level`, pagination, and the
//! `default_branch` of the project entity.

use crate::helpers::*;
use patrol::simulator::seed::SeedProject;

fn paths(answer: &Answer, field: &str) -> Vec<String> {
    answer.body.as_array().into_iter().flatten().filter_map(|p| p[field].as_str().map(str::to_owned)).collect()
}

#[tokio::test]
async fn an_administrator_lists_every_project_and_group_and_a_member_its_own() {
    let api = Api::start(standard_seed()).await;
    let all = api.get("/projects", ADMIN).await;
    assert_eq!(all.status, 200);
    assert_eq!(paths(&all, "path_with_namespace"), ["sec/app", "other/thing"]);
    assert_eq!(all.body[0]["default_branch"], "main");
    assert_eq!(paths(&api.get("/groups", ADMIN).await, "full_path"), ["sec", "other"]);
    // alice is a Maintainer of sec (inherited by sec/app); dave a Developer of sec/app only.
    assert_eq!(paths(&api.get("/projects", ALICE).await, "path_with_namespace"), ["sec/app"]);
    assert_eq!(paths(&api.get("/groups", ALICE).await, "full_path"), ["sec"]);
    assert_eq!(paths(&api.get("/projects?min_access_level=40", ALICE).await, "path_with_namespace"), ["sec/app"]);
    assert!(paths(&api.get("/groups?min_access_level=50", ALICE).await, "full_path").is_empty());
    assert!(paths(&api.get("/projects?min_access_level=40", DEV).await, "path_with_namespace").is_empty());
    // The harder reading: the filter counts memberships, not an administrator's implied access.
    assert!(paths(&api.get("/projects?min_access_level=40", ADMIN).await, "path_with_namespace").is_empty());
    assert_eq!(api.get("/projects?min_access_level=x", ADMIN).await.status, 400);
}

#[tokio::test]
async fn project_and_group_listings_are_paginated() {
    let mut seed = standard_seed();
    seed.projects.extend((0..130).map(|i| SeedProject { path: format!("bulk/p{i:03}"), ..Default::default() }));
    let api = Api::start(seed).await;
    let first = api.get("/projects?per_page=100", ADMIN).await;
    assert_eq!(first.body.as_array().map(Vec::len), Some(100));
    assert_eq!((first.header("x-total"), first.header("x-next-page")), (Some("132"), Some("2")));
    let second = api.get("/projects?per_page=100&page=2", ADMIN).await;
    assert_eq!(second.body.as_array().map(Vec::len), Some(32));
    assert_eq!(second.header("x-next-page"), Some(""));
    assert_eq!(api.get("/groups?per_page=1", ADMIN).await.header("x-total-pages"), Some("3"));
}
