//! The PostgreSQL wire protocol (version 3.0), as far as a pooler needs it.
//!
//! The hot path never decodes whole messages: [`scan`] walks frame headers in place so bytes
//! are forwarded as they arrive. Whole messages are only read during startup and login
//! ([`read`]), always with a length bound checked before allocating.

pub mod backend;
pub mod frontend;
pub mod read;
pub mod scan;
pub mod startup;

/// Protocol version 3.0 as sent in a StartupMessage.
pub const PROTOCOL_3_0: u32 = 196_608;
/// The magic "version" of an SSLRequest.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// The magic "version" of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// The magic "version" of a CancelRequest.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Supavisor's limit, and far more than any real client sends.
pub const MAX_STARTUP_PACKET: usize = 1024;
/// Bound for one message read whole during login (SASL exchanges, passwords, errors).
pub const MAX_LOGIN_MESSAGE: usize = 16 * 1024;
/// Bound for one message read whole from a server during its login (ParameterStatus, errors).
pub const MAX_SERVER_LOGIN_MESSAGE: usize = 64 * 1024;
