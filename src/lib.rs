#![forbid(unsafe_code)]
pub mod auth;
pub mod client;
pub mod proto;
