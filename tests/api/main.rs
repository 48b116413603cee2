//! Integration tests: the real router on port 0 against the BFL simulator on port 0, over HTTP.

mod helpers;

mod capacity;
mod generations;
mod models_and_probes;
mod upstream_outcomes;
mod validation;
