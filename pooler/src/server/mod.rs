//! Upstream server connections: login, reset, health.

pub mod connection;
pub mod credentials;
pub mod login;

pub use connection::ServerConnection;
pub use credentials::UpstreamCredentials;
pub use login::{ConnectError, ConnectTarget, connect};
