//! switchyard-config: YAML text -> validated [`Config`].
//!
//! First stage of the data flow (YAML -> config -> routing::compile ->
//! Snapshot). Pure: no tokio, no hyper. `check`, `run` and reload all go
//! through [`load_file`] so that they can never disagree.

pub mod model;
pub use model::*;
