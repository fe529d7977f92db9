//! switchyard-health: decides which targets may take traffic.
//!
//! Active checks (tcp connect or HTTP GET against `matcher`, ALB
//! semantics) run one task per target and drive the threshold state
//! machine; passive outlier detection ejects targets that fail real
//! traffic. Both write only the target's health word
//! (`switchyard_routing::Target`), which the proxy reads with one atomic
//! load per pick.

pub mod checker;
pub mod machine;
pub mod outlier;
pub mod probe;

pub use checker::HealthChecks;
