//! The C ABI of the Rust core: what c/bootstrap-api.h declares, built into
//! c/libbootstrap.a (`cargo rustc --features capi --crate-type staticlib`,
//! see c/Makefile). Every function is a thin front end of `Tracer`; none
//! panics across the boundary (`status::guard`).
//!
//! - `status`: status codes, error mapping and messages;
//! - `options`: `struct tb_options` into a `Config`;
//! - `desc`: `struct tb_event_desc`s of typed events and generic tracepoints;
//! - `event`: an `Event` as the `struct tb_event` handed to the callback;
//! - `handle`: the tracer handle and its functions;
//! - `json`: `tb_event_to_json` over a C caller's `struct tb_event`.

mod desc;
mod event;
mod handle;
mod json;
mod options;
mod status;
mod types;
