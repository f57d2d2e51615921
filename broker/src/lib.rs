//! myqueue-broker: a durable logging queue over HTTP.
//!
//! A request's path: [`api`] parses and validates it, [`app::App`] holds the shared pieces,
//! and a [`store::Store`] keeps the data: in memory, in SQLite, or in PostgreSQL.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod network;
pub mod server;
pub mod shutdown;
pub mod store;
