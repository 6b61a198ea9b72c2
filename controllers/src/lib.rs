//! dctl's controllers: one module per control loop. Who writes which field is in
//! `docs/task-lifecycle.md`.
#![forbid(unsafe_code)]
