//! Tests of the built-in GitLab simulator: conformance with GitLab's documented bodies, and the
//! behaviour every later test relies on.

mod behaviour;
mod binary;
mod conformance;
mod gitlab_code;
mod helpers;
mod listings;
