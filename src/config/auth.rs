//! API tokens (`auth.tokens`): who may call the API and with which role. Only the SHA-256
//! digest of each token is kept, so the secret itself is never printed and comparisons
//! take the same time whatever its length.

use super::BadValue;
use super::raw::RawAuth;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything a reader may, plus changing workflows and templates and acting on runs.
    Admin,
    /// Reading and streaming only.
    Reader,
    /// The worker API only (`/v1/tasks/*`), and reading queues and workers.
    Worker,
}

impl Role {
    /// The name used in config and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Reader => "reader",
            Self::Worker => "worker",
        }
    }
}

/// A configured API token: its name, role and the digest of its secret.
#[derive(Clone)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    pub digest: [u8; 32],
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The SHA-256 digest of a token secret.
pub fn token_digest(secret: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// The shortest token secret accepted: shorter ones are guessable.
const MIN_TOKEN_LEN: usize = 16;

/// Checks `auth.tokens`: names printable and unique, roles known, secrets long enough and
/// unique.
pub fn api_tokens(raw: &RawAuth) -> Result<Vec<ApiToken>, BadValue> {
    let mut tokens: Vec<ApiToken> = Vec::with_capacity(raw.tokens.len());
    for (i, t) in raw.tokens.iter().enumerate() {
        let key = |field: &str| format!("auth.tokens[{i}].{field}");
        let name = t.name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(BadValue::new(
                key("name"),
                "must have 1 to 64 printable characters",
            ));
        }
        let role = match t.role.trim().to_ascii_lowercase().as_str() {
            "admin" => Role::Admin,
            "reader" => Role::Reader,
            "worker" => Role::Worker,
            other => {
                return Err(BadValue::new(
                    key("role"),
                    format!("expected \"admin\", \"reader\" or \"worker\", found {other:?}"),
                ));
            }
        };
        if t.token.len() < MIN_TOKEN_LEN {
            return Err(BadValue::new(
                key("token"),
                format!(
                    "must have at least {MIN_TOKEN_LEN} characters (is the environment variable it names set?)"
                ),
            ));
        }
        let digest = token_digest(&t.token);
        if tokens.iter().any(|o| o.name == name) {
            return Err(BadValue::new(
                key("name"),
                format!("{name:?} is used twice"),
            ));
        }
        if tokens.iter().any(|o| o.digest == digest) {
            return Err(BadValue::new(
                key("token"),
                "the same token is configured twice",
            ));
        }
        tokens.push(ApiToken {
            name: name.to_owned(),
            role,
            digest,
        });
    }
    Ok(tokens)
}
