//! The rotation engine end to end: the real `patrol` binary against the simulator.

mod bad_answers;
mod budget;
mod cli;
mod concurrency;
mod discover;
mod discover_review;
mod efficiency;
mod engine;
mod faults;
mod gitlab_answers;
mod helpers;
mod hygiene;
mod identity;
mod locks;
mod loopback;
mod markers;
mod notify;
mod overlap;
mod panic;
mod pipelines;
mod plan;
mod recovery;
mod review;
mod self_rotation;
mod tls;
