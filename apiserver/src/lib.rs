//! The Kubernetes-compatible API server shared by cloud-core and edge-core.
//!
//! Layers, outside in: [`server`] (TLS, HTTP, limits) → [`api`] (routing, verbs, watch,
//! tables) → the `store` crate (memory index + watch window over a durable backend). [`auth`],
//! [`validate`], [`patch`], [`selectors`], [`table`] and [`openapi`] are pure helpers.

pub mod api;
pub mod apps;
pub mod auth;
pub mod batch;
pub mod bootstrap;
pub mod cron;
pub mod error;
pub mod kinds;
pub mod kubeconfig;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod openapi_v2;
pub mod patch;
pub mod path;
pub mod portforward;
pub mod protobuf;
pub mod resources;
pub mod reviews;
pub mod server;
pub mod services;
pub mod spdy;
pub mod streams;
pub mod table;
pub mod usage;
pub mod validate;

/// The version this server reports (`/version`, OpenAPI info).
pub const VERSION: &str = concat!("v1.32.0-atoll.", env!("CARGO_PKG_VERSION"));
