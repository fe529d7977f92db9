//! switchyard-routing: `Snapshot::compile(Config, previous) -> Snapshot`.
//!
//! Second stage of the data flow (YAML -> config -> **routing** -> control
//! publishes the `Arc<Snapshot>` -> proxy reads it per request). Pure and
//! synchronous: route tables, weighted group splits, `Arc<Target>` kept
//! across reloads, and the lock-free pickers. Everything that can be
//! precomputed is, so that the hot path is loads, compares and one
//! `fetch_add`.

pub mod action;
pub mod cookie;
pub mod group;
pub mod hash;
pub mod maglev;
pub mod matcher;
pub mod snapshot;
pub mod split;
pub mod target;
pub mod wrr;

pub use action::{Fixed, RedirectAction, RequestUrl};
pub use group::{Eligibility, Group};
pub use matcher::RequestInfo;
pub use snapshot::{Action, ListenerTable, PickInput, RequestMetrics, Route, Snapshot};
pub use split::Split;
pub use target::{InFlight, Target, TargetState};

/// A config that passed validation but cannot be compiled: a bug in
/// validation, reported instead of panicking.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("unknown target group {0:?}")]
    UnknownGroup(String),
    #[error("invalid {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests;
