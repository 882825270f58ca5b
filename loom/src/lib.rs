//! The circuit breaker's lock-free success count under loom: the module is
//! the crate's own file, and its `loom_model` tests run here.
#![cfg_attr(not(test), allow(dead_code))]

#[path = "../../src/circuit_breaker/tally.rs"]
mod tally;
