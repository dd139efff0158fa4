//! Why a builder could not produce an object.
//!
//! The CRD schema already refuses most bad specs at `kubectl apply`; these errors cover what it
//! cannot see (objects not yet persisted, Secret contents) and specs that reached the operator
//! some other way (an older CRD, a schema bypassed). The controller reports them in status, so
//! each message names the field and says what would be accepted.

use pgfleet_crds::DocumentError;

/// A child of a `PoolerFleet` could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The fleet lacks metadata every child needs: its name, its namespace, or (for owner
    /// references) the uid the API server assigns.
    #[error("the PoolerFleet has no metadata.{0} (has it been read back from the API server?)")]
    MissingMetadata(&'static str),
    /// A port outside 1..=65535.
    #[error("spec.ports.{name} is {value}: a port must be between 1 and 65535")]
    InvalidPort {
        /// `session`, `pooled` or `admin`.
        name: &'static str,
        /// The value found.
        value: i32,
    },
    /// Two of the three ports are equal, so one listener would fail to bind.
    #[error("spec.ports: the session, pooled and admin ports must all differ")]
    DuplicatePorts,
    /// A negative replica count.
    #[error("spec.replicas is {0}: it must be 0 or more")]
    NegativeReplicas(i32),
    /// A negative termination grace period.
    #[error("spec.terminationGracePeriodSeconds is {0}: it must be 0 or more")]
    NegativeGracePeriod(i64),
    /// The rolling-restart hash could not be computed (the inputs failed to serialize).
    #[error("cannot hash the pod inputs: {0}")]
    Hash(String),
}

/// A `Tenant` could not be rendered into a tenant document or its Secret.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The tenant lacks its name or namespace (it has not been read back from the API server).
    #[error("the Tenant has no metadata.{0}")]
    MissingMetadata(&'static str),
    /// A user listed in `spec.users` has no password among the resolved secrets.
    #[error("no password was resolved for user {user:?} (spec.users[].passwordSecretRef)")]
    MissingUserPassword {
        /// The user's name.
        user: String,
    },
    /// `spec.authQuery` is set but its `username`/`password` Secret was not resolved.
    #[error(
        "spec.authQuery is set but no auth user credentials were resolved (keys \"username\" and \"password\" of authQuery.userSecretRef)"
    )]
    MissingAuthUser,
    /// The tenant asks for TLS towards its server, which tenant documents cannot express yet.
    ///
    /// Rendering anyway would make the pooler connect in clear text to a server the platform
    /// team meant to reach over (verified) TLS, so the tenant is refused instead.
    #[error(
        "spec.upstream.tls.mode is {mode:?}, but upstream TLS is not supported by the pooler yet: use \"disable\" or wait for a pgfleet release with upstream TLS"
    )]
    UpstreamTlsUnsupported {
        /// The mode asked for (`require`, `verify-ca`, `verify-full`).
        mode: String,
    },
    /// A field the schema should have refused (out of range, malformed).
    #[error("{field}: {message}")]
    InvalidField {
        /// The field's path in the Tenant (`spec.users[2].poolSize`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The rendered document breaks a rule of the tenant document itself.
    #[error(transparent)]
    Document(#[from] DocumentError),
}

impl RenderError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        RenderError::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }
}
